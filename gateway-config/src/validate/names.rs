//! Object names: their syntax, one object per name and kind, and references by name.

use std::collections::HashMap;

use super::{Checker, Element, Origin};
use crate::matching::check_name;

/// A kind of named object, as messages call it.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub singular: &'static str,
    pub plural: &'static str,
    pub table: &'static str,
}

pub const LISTENER: Kind = Kind {
    singular: "listener",
    plural: "listeners",
    table: "[[listeners]]",
};
pub const POOL: Kind = Kind {
    singular: "backend pool",
    plural: "backend pools",
    table: "[[backend_pools]]",
};
pub const SETTINGS: Kind = Kind {
    singular: "backend settings",
    plural: "backend settings",
    table: "[[backend_settings]]",
};
pub const PROBE: Kind = Kind {
    singular: "probe",
    plural: "probes",
    table: "[[probes]]",
};
pub const RULE: Kind = Kind {
    singular: "rule",
    plural: "rules",
    table: "[[rules]]",
};

/// The names of one kind of object, each with the index of the object that has it.
#[derive(Debug)]
pub struct Names {
    kind: Kind,
    index: HashMap<String, usize>,
    in_order: Vec<String>,
}

impl Names {
    /// Checks each name's syntax and that no two objects share one. Objects that failed to
    /// deserialize still register the name they were given, so references to them are
    /// not reported as unknown on top of their own problem.
    pub fn register<T>(elements: &[Element<T>], kind: Kind, c: &mut Checker<'_>) -> Self {
        let mut names = Self {
            kind,
            index: HashMap::new(),
            in_order: Vec::new(),
        };
        for (i, element) in elements.iter().enumerate() {
            let Some(name) = &element.name else {
                continue; // No (string) name: toml's message already says so.
            };
            if let Err(invalid) = check_name(name) {
                c.invalid(&element.origin, "name", invalid);
            }
            match names.index.get(name) {
                Some(&first) => c.error(
                    &element.origin,
                    "name",
                    format!(
                        "{} name {name:?} is already used by {}",
                        kind.singular, elements[first].origin.key
                    ),
                    format!("give each {} its own name", kind.singular),
                ),
                None => {
                    names.index.insert(name.clone(), i);
                    names.in_order.push(name.clone());
                }
            }
        }
        names
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The index of the object named `name`, which `field` of `origin` refers to; an
    /// unknown name is reported with the names that exist.
    pub fn resolve(
        &self,
        name: &str,
        origin: &Origin,
        field: &str,
        c: &mut Checker<'_>,
    ) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        let Kind {
            singular,
            plural,
            table,
        } = self.kind;
        let defined = if self.in_order.is_empty() {
            format!("no {plural} are defined")
        } else {
            let quoted: Vec<String> = self.in_order.iter().map(|n| format!("{n:?}")).collect();
            format!("the defined {plural} are {}", quoted.join(", "))
        };
        c.error(
            origin,
            field,
            format!("{singular} {name:?} is not defined; {defined}"),
            format!("use one of the defined names, or add a {table} entry named {name:?}"),
        );
        None
    }
}
