//! Locks that ignore poisoning. A lock is poisoned when a thread panicked
//! while holding it; every structure the proxy guards this way is changed by
//! one insert, remove or swap at a time, so what it holds is still whole, and
//! a proxy (or its audit log) that stopped working after an unrelated panic
//! would lose requests and lines instead.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
