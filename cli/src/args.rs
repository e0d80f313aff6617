//! The command line, as clap sees it, and the few pure helpers around it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use oss_proto::client::DEFAULT_PROXY;

/// Default bench user: far from real users, so a bench never touches their files.
pub const BENCH_USER: &str = "bench";

#[derive(Debug, Parser)]
#[command(
    name = "oss",
    version,
    about = "Command line of the oss object store",
    propagate_version = true
)]
pub struct Cli {
    /// Address of the proxy [default: $OSS_PROXY, then 127.0.0.1:8080]
    #[arg(long, global = true, value_name = "ADDR")]
    pub proxy: Option<String>,

    /// File holding your key (`NAME:KEY`, one line, as `oss user add` printed it)
    /// [default: $OSS_KEY_FILE, then $XDG_CONFIG_HOME/oss/key or ~/.config/oss/key]
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// How long a command keeps trying while the proxy cannot be reached or goes away
    /// mid-request (a restart), in seconds; 0: fail at once
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub retry_for: u64,

    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a file (or stdin) as USER/FILENAME, replacing any previous version
    ///
    /// FILENAME may hold '/' (`alice/photos/2024/cat.jpg`): segments of 1-255 bytes, none
    /// empty, '.' or '..', at most 1024 bytes in all. Parent directories need not exist.
    Upload {
        /// The object's name, USER/FILENAME
        #[arg(value_name = "USER/FILENAME")]
        name: String,
        /// Local file to read, '-' for stdin [default: FILENAME, relative to the current
        /// directory]
        #[arg(value_name = "LOCAL_PATH")]
        local: Option<PathBuf>,
    },
    /// Download USER/FILENAME to a file (or stdout)
    Download {
        /// The object's name, USER/FILENAME
        #[arg(value_name = "USER/FILENAME")]
        name: String,
        /// Where to write it, '-' for stdout; a directory gets FILENAME's last segment inside
        /// it [default: FILENAME's last segment in the current directory]
        #[arg(value_name = "LOCAL_PATH")]
        local: Option<PathBuf>,
    },
    /// Delete USER/FILENAME (every replica)
    Delete {
        /// The object's name, USER/FILENAME
        #[arg(value_name = "USER/FILENAME")]
        name: String,
    },
    /// List a user's files and directories, or one directory's, one a line
    ///
    /// `oss list alice` lists alice's top level: files, and `sub/` for each subdirectory.
    /// `oss list alice/photos/` (the trailing '/' may be left out) lists one level below
    /// photos/, names relative to it. With -r, everything below, full relative names and
    /// no `sub/` lines except for directories made by `oss mkdir`. A directory that does not
    /// exist is "not found".
    List {
        /// USER, or USER/DIR/ for one directory
        #[arg(value_name = "USER[/DIR/]")]
        target: String,
        /// Long format: size, MD5, modification time (UTC), name; a directory shows '-' for
        /// size and MD5 (and for the time unless `oss mkdir` made it)
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// Everything below, at every depth
        #[arg(short = 'r', long = "recursive")]
        recursive: bool,
    },
    /// Make a directory, so it is listed even while empty
    ///
    /// Stores a directory marker: a zero-byte object USER/DIR of content type
    /// application/directory. Like mkdir -p: parents exist implicitly and need no markers,
    /// and an existing directory is fine; an existing file of that name is an error.
    Mkdir {
        /// The directory, USER/DIR[/SUB...]
        #[arg(value_name = "USER/DIR")]
        dir: String,
    },
    /// Copy the file SRC to DST inside the cluster (files only)
    ///
    /// Replaces DST if it exists; the bytes do not pass through this client. Prints nothing
    /// on success, like cp.
    Copy {
        /// The file to copy, USER/FILENAME
        #[arg(value_name = "SRC")]
        src: String,
        /// The new name, USER/FILENAME
        #[arg(value_name = "DST")]
        dst: String,
    },
    /// Move the file SRC to DST (files only, not directories)
    ///
    /// A copy inside the cluster, then a delete of SRC. Replaces DST if it exists.
    Move {
        /// The file to move, USER/FILENAME
        #[arg(value_name = "SRC")]
        src: String,
        /// The new name, USER/FILENAME
        #[arg(value_name = "DST")]
        dst: String,
    },
    /// Add a storage server to the ring (its partitions move in the background)
    AddDisk {
        /// The storage server's address, HOST:PORT
        #[arg(value_name = "ADDR")]
        addr: String,
        /// Wait until the rebalance is done
        #[arg(long)]
        wait: bool,
    },
    /// Drain a storage server and remove it from the ring
    RemoveDisk {
        /// The storage server's address, HOST:PORT
        #[arg(value_name = "ADDR")]
        addr: String,
        /// Wait until the drain is done
        #[arg(long)]
        wait: bool,
    },
    /// Show the ring, each storage server's health and the background jobs
    Status {
        /// Print the proxy's status as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Check (and repair) every replica of USER/FILENAME; exit 1 if not all are good
    Check {
        /// The object's name, USER/FILENAME
        #[arg(value_name = "USER/FILENAME")]
        name: String,
    },
    /// Start a full repair pass
    Repair {
        /// Wait until the repair is done
        #[arg(long)]
        wait: bool,
    },
    /// Ask every storage server for one audit pass now, and wait for it
    Audit,
    /// Load generator: upload, download, list and delete objects through one client
    Bench(BenchArgs),
    /// Manage users and their keys (admin key only)
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user and print their key (one line, shown only this once)
    Add {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List the users who have a key
    List,
    /// Remove a user: their key stops working at once (their files stay)
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Give a user a new key (printed once); the old one stops working at once
    Rotate {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of objects
    #[arg(long, default_value_t = 100)]
    pub objects: usize,
    /// Size of each object in bytes (suffixes K, M, G = KiB, MiB, GiB)
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub size: u64,
    /// Concurrent requests (tasks sharing one client)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// User whose files the bench creates (bench-NNNNNN names)
    #[arg(long, default_value = BENCH_USER)]
    pub user: String,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
    /// Skip the delete phase (leave the objects for a later run)
    #[arg(long)]
    pub keep: bool,
    /// Phases to run, in order: upload,download,list,delete
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "upload,download,list,delete"
    )]
    pub phases: Vec<Phase>,
    /// Upload this local file's bytes as every object (its size replaces --size), read as
    /// it is sent [default: generated pseudo-random bytes]
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Drive an OpenStack Swift endpoint over HTTP instead of the proxy: its tempauth (v1)
    /// URL, e.g. http://127.0.0.1:8080/auth/v1.0 (oss-proxy --http serves one). --user
    /// names the container; objects are bench-NNNNNN in it
    #[arg(long, value_name = "AUTH_URL")]
    pub swift: Option<String>,
    /// Swift user, ACCOUNT:USER (with --swift)
    #[arg(long, value_name = "USER", env = "ST_USER")]
    pub swift_user: Option<String>,
    /// Swift key (with --swift); prefer $ST_KEY, which `ps` does not show
    #[arg(long, value_name = "KEY", env = "ST_KEY", hide_env_values = true)]
    pub swift_key: Option<String>,
    /// With --swift: ask for listing pages of at most N names (the server's default when
    /// not given); the list phase pages with `marker` until a page comes back empty
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub list_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Upload,
    Download,
    List,
    Delete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Upload => "upload",
            Phase::Download => "download",
            Phase::List => "list",
            Phase::Delete => "delete",
        }
    }
}

/// `--proxy`, then `$OSS_PROXY` (if set and not empty), then [`DEFAULT_PROXY`].
pub fn proxy_addr(flag: Option<&str>, env: Option<&str>) -> String {
    flag.or(env.filter(|e| !e.trim().is_empty()))
        .unwrap_or(DEFAULT_PROXY)
        .trim()
        .to_owned()
}

/// Parses a byte count: `1000`, `64K`, `1M`, `2G`, `4KiB`, `1MB` (all suffixes binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown unit in {s:?} (use K, M, G)")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// A storage server address must look like `HOST:PORT`; checked before anything is sent.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid address {addr:?}: expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("invalid address {addr:?}: bad host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("invalid address {addr:?}: bad port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("oss").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn proxy_defaults() {
        assert_eq!(proxy_addr(None, None), DEFAULT_PROXY);
        assert_eq!(proxy_addr(None, Some("")), DEFAULT_PROXY);
        assert_eq!(proxy_addr(None, Some("10.0.0.1:9")), "10.0.0.1:9");
        assert_eq!(proxy_addr(Some("h:1"), Some("10.0.0.1:9")), "h:1");
        assert_eq!(DEFAULT_PROXY, "127.0.0.1:8080");
    }

    #[test]
    fn proxy_flag_anywhere() {
        let c = parse(&["--proxy", "a:1", "list", "alice"]);
        assert_eq!(c.proxy.as_deref(), Some("a:1"));
        let c = parse(&["list", "alice", "--proxy", "b:2"]);
        assert_eq!(c.proxy.as_deref(), Some("b:2"));
        assert!(parse(&["status"]).proxy.is_none());
    }

    #[test]
    fn transfer_defaults() {
        match parse(&["upload", "alice/f"]).cmd {
            Command::Upload { name, local } => {
                assert_eq!(name, "alice/f");
                assert!(local.is_none());
            }
            c => panic!("{c:?}"),
        }
        match parse(&["download", "alice/f", "-"]).cmd {
            Command::Download { local, .. } => assert_eq!(local, Some(PathBuf::from("-"))),
            c => panic!("{c:?}"),
        }
        match parse(&["list", "alice", "-l"]).cmd {
            Command::List {
                target,
                long,
                recursive,
            } => assert!(long && !recursive && target == "alice"),
            c => panic!("{c:?}"),
        }
        match parse(&["list", "-r", "alice/photos/", "-l"]).cmd {
            Command::List {
                target,
                long,
                recursive,
            } => assert!(long && recursive && target == "alice/photos/"),
            c => panic!("{c:?}"),
        }
        match parse(&["move", "alice/a", "alice/d/b"]).cmd {
            Command::Move { src, dst } => assert_eq!((&*src, &*dst), ("alice/a", "alice/d/b")),
            c => panic!("{c:?}"),
        }
        assert!(Cli::try_parse_from(["oss", "copy", "alice/a"]).is_err());
        match parse(&["add-disk", "127.0.0.1:7001", "--wait"]).cmd {
            Command::AddDisk { addr, wait } => assert!(wait && addr == "127.0.0.1:7001"),
            c => panic!("{c:?}"),
        }
        assert!(Cli::try_parse_from(["oss", "upload"]).is_err());
        assert!(Cli::try_parse_from(["oss", "frobnicate"]).is_err());
    }

    #[test]
    fn bench_defaults_and_phases() {
        let Command::Bench(b) = parse(&["bench"]).cmd else {
            panic!()
        };
        assert_eq!((b.objects, b.size, b.concurrency), (100, 64 << 10, 4));
        assert_eq!(b.user, BENCH_USER);
        assert!(!b.json && !b.keep);
        assert_eq!(
            b.phases,
            [Phase::Upload, Phase::Download, Phase::List, Phase::Delete]
        );
        let Command::Bench(b) = parse(&[
            "bench",
            "--objects",
            "7",
            "--size",
            "1M",
            "--concurrency",
            "3",
            "--phases",
            "upload,list",
            "--json",
            "--keep",
        ])
        .cmd
        else {
            panic!()
        };
        assert_eq!((b.objects, b.size, b.concurrency), (7, 1 << 20, 3));
        assert_eq!(b.phases, [Phase::Upload, Phase::List]);
        assert!(b.json && b.keep);
        assert!(Cli::try_parse_from(["oss", "bench", "--phases", "upload,nap"]).is_err());
        assert!(Cli::try_parse_from(["oss", "bench", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("3X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn addresses() {
        assert!(validate_addr("127.0.0.1:7001").is_ok());
        assert!(validate_addr("storage-1:7001").is_ok());
        assert!(validate_addr("[::1]:7001").is_ok());
        assert!(validate_addr("127.0.0.1").is_err());
        assert!(validate_addr(":7001").is_err());
        assert!(validate_addr("h:0").is_err());
        assert!(validate_addr("h:99999").is_err());
        assert!(validate_addr("a b:1").is_err());
    }
}
