//! What `/metrics` serves: the data model and the formats written from it.

pub(crate) mod model;
