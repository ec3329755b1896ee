//! Reads and small changes of the running dataplane for the control plane (issue 6).
