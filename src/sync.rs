//! Locks, one way: a panic while a lock was held does not make the lock unusable for
//! every later request (std's "poisoning"); the guard is taken back with the data as
//! the panicking holder left it. Critical sections here are short map and counter
//! updates, so what they leave is consistent enough to go on with; a server that
//! turned one panic into a 500 on every later call would not be.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] without poisoning.
pub(crate) trait Locked<T> {
    /// The guard, whether or not an earlier holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] without poisoning.
pub(crate) trait RwLocked<T> {
    /// A read guard, whether or not an earlier holder panicked.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard, whether or not an earlier holder panicked.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLocked<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_holding_leaves_the_lock_usable() {
        let shared = std::sync::Arc::new(Mutex::new(1));
        let held = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("while holding");
        })
        .join();
        assert!(shared.lock().is_err(), "std poisoned it");
        *shared.locked() += 1;
        assert_eq!(*shared.locked(), 2);
    }
}
