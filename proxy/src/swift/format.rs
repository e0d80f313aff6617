//! Listings as Swift writes them: plain text (one name a line), JSON and XML, for the
//! account (containers) and for a container (objects and `subdir` prefixes).

use oss_proto::name::hex;
use oss_proto::wire::ListItem;
use serde_json::json;

use super::http::{iso_time, xml_escape, ACCOUNT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
    Xml,
}

impl Format {
    /// From `format=` (which wins) or the `Accept` header, as Swift picks it.
    pub fn choose(param: Option<&str>, accept: Option<&str>) -> Format {
        match param.map(|p| p.to_ascii_lowercase()) {
            Some(p) if p == "json" => return Format::Json,
            Some(p) if p == "xml" => return Format::Xml,
            Some(p) if p == "plain" => return Format::Plain,
            _ => {}
        }
        let accept = accept.unwrap_or("").to_ascii_lowercase();
        if accept.contains("application/json") {
            Format::Json
        } else if accept.contains("application/xml") || accept.contains("text/xml") {
            Format::Xml
        } else {
            Format::Plain
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Plain => "text/plain; charset=utf-8",
            Format::Json => "application/json; charset=utf-8",
            Format::Xml => "application/xml; charset=utf-8",
        }
    }
}

/// One container as the account lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
    pub last_modified: u64,
}

/// An object listing's body (`None`: an empty plain listing, answered 204).
pub fn objects(fmt: Format, container: &str, items: &[ListItem]) -> Option<String> {
    match fmt {
        Format::Plain => {
            if items.is_empty() {
                return None;
            }
            let mut s = String::new();
            for i in items {
                s.push_str(i.key());
                s.push('\n');
            }
            Some(s)
        }
        Format::Json => {
            let rows: Vec<_> = items
                .iter()
                .map(|i| match i {
                    ListItem::Object(m) => json!({
                        "name": m.name.file(),
                        "hash": hex(&m.md5),
                        "bytes": m.size,
                        "content_type": content_type_of(&m.attrs.content_type),
                        "last_modified": iso_time(m.timestamp),
                    }),
                    ListItem::Prefix(p) => json!({ "subdir": p }),
                })
                .collect();
            Some(serde_json::Value::Array(rows).to_string())
        }
        Format::Xml => {
            let mut s = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<container name=\"{}\">",
                xml_escape(container)
            );
            for i in items {
                match i {
                    ListItem::Object(m) => s.push_str(&format!(
                        "<object><name>{}</name><hash>{}</hash><bytes>{}</bytes>\
                         <content_type>{}</content_type><last_modified>{}</last_modified></object>",
                        xml_escape(m.name.file()),
                        hex(&m.md5),
                        m.size,
                        xml_escape(content_type_of(&m.attrs.content_type)),
                        iso_time(m.timestamp)
                    )),
                    ListItem::Prefix(p) => s.push_str(&format!(
                        "<subdir name=\"{0}\"><name>{0}</name></subdir>",
                        xml_escape(p)
                    )),
                }
            }
            s.push_str("</container>");
            Some(s)
        }
    }
}

/// An entry of the account's listing: a container, or (with a delimiter) a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEntry {
    Container(ContainerRow),
    Subdir(String),
}

/// The account's listing body (`None`: an empty plain listing).
pub fn containers(fmt: Format, rows: &[AccountEntry]) -> Option<String> {
    match fmt {
        Format::Plain => {
            if rows.is_empty() {
                return None;
            }
            Some(
                rows.iter()
                    .map(|r| match r {
                        AccountEntry::Container(c) => format!("{}\n", c.name),
                        AccountEntry::Subdir(p) => format!("{p}\n"),
                    })
                    .collect(),
            )
        }
        Format::Json => Some(
            serde_json::Value::Array(
                rows.iter()
                    .map(|r| match r {
                        AccountEntry::Container(c) => json!({
                            "name": c.name,
                            "count": c.count,
                            "bytes": c.bytes,
                            "last_modified": iso_time(c.last_modified),
                        }),
                        AccountEntry::Subdir(p) => json!({ "subdir": p }),
                    })
                    .collect(),
            )
            .to_string(),
        ),
        Format::Xml => {
            let mut s =
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<account name=\"{ACCOUNT}\">");
            for r in rows {
                match r {
                    AccountEntry::Container(c) => s.push_str(&format!(
                        "<container><name>{}</name><count>{}</count><bytes>{}</bytes>\
                         <last_modified>{}</last_modified></container>",
                        xml_escape(&c.name),
                        c.count,
                        c.bytes,
                        iso_time(c.last_modified)
                    )),
                    AccountEntry::Subdir(p) => s.push_str(&format!(
                        "<subdir name=\"{0}\"><name>{0}</name></subdir>",
                        xml_escape(p)
                    )),
                }
            }
            s.push_str("</account>");
            Some(s)
        }
    }
}

/// A stored content type, or Swift's default for objects written without one.
pub fn content_type_of(stored: &str) -> &str {
    if stored.is_empty() {
        "application/octet-stream"
    } else {
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::wire::{Attrs, ObjectMeta};
    use oss_proto::ObjectName;

    fn obj(name: &str) -> ListItem {
        ListItem::Object(ObjectMeta {
            name: ObjectName::parse(&format!("c/{name}")).unwrap(),
            size: 3,
            md5: [0xab; 16],
            timestamp: 1_700_000_000_123_456,
            deleted: false,
            attrs: Attrs {
                content_type: "text/plain".into(),
                meta: Default::default(),
            },
        })
    }

    #[test]
    fn three_formats() {
        let items = vec![obj("a&b"), ListItem::Prefix("d/".into())];
        assert_eq!(objects(Format::Plain, "c", &items).unwrap(), "a&b\nd/\n");
        assert_eq!(objects(Format::Plain, "c", &[]), None);
        let j: serde_json::Value =
            serde_json::from_str(&objects(Format::Json, "c", &items).unwrap()).unwrap();
        assert_eq!(j[0]["name"], "a&b");
        assert_eq!(j[0]["bytes"], 3);
        assert_eq!(j[0]["hash"], "ab".repeat(16));
        assert_eq!(j[0]["last_modified"], "2023-11-14T22:13:20.123456");
        assert_eq!(j[1]["subdir"], "d/");
        assert_eq!(objects(Format::Json, "c", &[]).unwrap(), "[]");
        let x = objects(Format::Xml, "c", &items).unwrap();
        assert!(x.contains("<name>a&amp;b</name>"), "{x}");
        assert!(
            x.contains("<subdir name=\"d/\"><name>d/</name></subdir>"),
            "{x}"
        );
        let rows = [
            AccountEntry::Container(ContainerRow {
                name: "alice".into(),
                count: 2,
                bytes: 5,
                last_modified: 0,
            }),
            AccountEntry::Subdir("b-".into()),
        ];
        assert_eq!(containers(Format::Plain, &rows).unwrap(), "alice\nb-\n");
        assert!(containers(Format::Json, &rows)
            .unwrap()
            .contains(r#"{"subdir":"b-"}"#));
        assert!(containers(Format::Xml, &rows)
            .unwrap()
            .contains("<container><name>alice</name><count>2</count>"));
    }

    #[test]
    fn format_choice() {
        assert_eq!(Format::choose(Some("json"), None), Format::Json);
        assert_eq!(Format::choose(Some("XML"), None), Format::Xml);
        assert_eq!(
            Format::choose(None, Some("application/json;q=1")),
            Format::Json
        );
        assert_eq!(Format::choose(None, Some("text/xml")), Format::Xml);
        assert_eq!(Format::choose(None, Some("*/*")), Format::Plain);
        assert_eq!(
            Format::choose(Some("plain"), Some("application/json")),
            Format::Plain
        );
    }
}
