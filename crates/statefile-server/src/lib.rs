//! HTTP document service over statefile.
