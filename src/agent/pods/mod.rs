//! Pod lifecycle: pod workers, CRI translation, relist, status.
