//! Signed assertions (in progress).
