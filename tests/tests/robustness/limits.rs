//! The message size limit and deadlines.
