//! Locks that survive a panic: a request that panicked while holding a lock must not make
//! every later request fail on the poisoned lock. The data behind these locks is kept
//! consistent by short critical sections (an insert, a swap), so the guard is taken as is.

use std::sync::{Mutex, MutexGuard};

pub trait Locked<T> {
    /// `lock()`, through a poisoned lock too.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_locked_does_not_poison_later_requests() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("a request panics while holding the lock");
        })
        .join();
        assert!(r.is_err());
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
