//! Which methods a layer leaves unrecorded.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
};

type Predicate = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Which methods are not recorded at all.
#[derive(Clone, Default)]
pub(crate) struct MethodFilter {
    services: HashSet<Box<str>>,
    methods: HashMap<Box<str>, HashSet<Box<str>>>,
    predicate: Option<Predicate>,
}

impl MethodFilter {
    pub fn exclude_service(&mut self, service: &str) {
        self.services.insert(service.into());
    }

    pub fn exclude_method(&mut self, service: &str, method: &str) {
        self.methods.entry(service.into()).or_default().insert(method.into());
    }

    pub fn set_predicate(&mut self, predicate: Predicate) {
        self.predicate = Some(predicate);
    }

    pub(crate) fn records(&self, service: &str, method: &str) -> bool {
        !self.services.contains(service)
            && !self.methods.get(service).is_some_and(|methods| methods.contains(method))
            && self.predicate.as_ref().is_none_or(|keep| keep(service, method))
    }
}

impl fmt::Debug for MethodFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodFilter")
            .field("services", &self.services)
            .field("methods", &self.methods)
            .field("predicate", &self.predicate.as_ref().map(|_| ".."))
            .finish()
    }
}
