//! Workload identity (in progress).
