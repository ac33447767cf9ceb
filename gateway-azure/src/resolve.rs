//! References between the gateway's objects: `{"id": ...}` holding a resource id
//! (`/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/
//! applicationGateways/<gw>/httpListeners/<name>`) or an ARM expression that builds one
//! (`concat(variables('gatewayId'), '/httpListeners/<name>')`, `resourceId('Microsoft.
//! Network/applicationGateways/httpListeners', '<gw>', '<name>')`). Either way the target
//! is the last `<collection>/<name>` pair. Leftovers of an expression pasted into a plain
//! id (`.../httpListeners/<name>')]`) are cut off and reported. A reference that names no
//! pair, a pair of another collection, or a name the input does not define is reported,
//! never guessed.

use std::collections::HashMap;

use super::expr::{self, Scope};

/// How deep variables may refer to variables.
const EXPRESSION_DEPTH: u8 = 8;

/// Where a reference points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The collection as the reference spells it (e.g. `backendHttpSettingsCollection`).
    pub collection: String,
    /// The Azure name of the object.
    pub name: String,
    /// Text cut off the end of the name (`')]`), if any.
    pub junk: Option<String>,
}

/// Why a reference cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefError {
    /// No `{"id": ...}` or an empty one.
    Empty,
    /// No `<collection>/<name>` pair in it.
    NoPair(String),
    /// The name comes from an expression that cannot be evaluated here.
    Unevaluable(String),
    /// It points into another collection than the field takes.
    WrongCollection { expected: String, found: Target },
    /// The input does not define the object it names.
    Missing(Target),
}

impl RefError {
    /// In words, for the report.
    pub fn describe(&self) -> String {
        match self {
            Self::Empty => "the reference has no id".to_owned(),
            Self::NoPair(id) => format!("reference {id:?} names no <collection>/<name>"),
            Self::Unevaluable(id) => format!(
                "reference {id:?} takes its name from an ARM expression that cannot be \
                 evaluated without deploying"
            ),
            Self::WrongCollection { expected, found } => format!(
                "the reference points to {}/{}, not into {expected}",
                found.collection, found.name
            ),
            Self::Missing(target) => {
                format!("{}/{} is not in the input", target.collection, target.name)
            }
        }
    }
}

/// Azure names are letters, digits, `_`, `.` and `-`: anything else at the end of a name
/// in an id is debris (quotes, brackets) of an expression.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The last `<collection>/<name>` of `reference` for one of `collections` (compared
/// without case), the expression evaluated first.
pub fn parse(reference: &str, collections: &[&str], scope: &dyn Scope) -> Result<Target, RefError> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(RefError::Empty);
    }
    let evaluated = expr::evaluate(reference, scope, EXPRESSION_DEPTH);
    // An expression that does not parse (half an expression) is read as a path.
    let texts = [evaluated.as_str(), reference];
    for text in texts {
        if let Some(target) = last_pair(text, collections) {
            if target.name.contains(expr::UNKNOWN) {
                return Err(RefError::Unevaluable(reference.to_owned()));
            }
            return Ok(target);
        }
    }
    Err(RefError::NoPair(reference.to_owned()))
}

fn last_pair(text: &str, collections: &[&str]) -> Option<Target> {
    let segments: Vec<&str> = text.split('/').map(str::trim).collect();
    let at = segments
        .iter()
        .enumerate()
        .rev()
        .skip(1)
        .find_map(|(i, s)| {
            collections
                .iter()
                .any(|c| c.eq_ignore_ascii_case(s))
                .then_some(i)
        })?;
    let raw = segments[at + 1];
    let end = raw
        .char_indices()
        .find(|&(_, c)| !is_name_char(c) && c != expr::UNKNOWN)
        .map_or(raw.len(), |(i, _)| i);
    let (name, junk) = raw.split_at(end);
    if name.is_empty() {
        return None;
    }
    let junk = segments[at + 2..]
        .iter()
        .fold(junk.to_owned(), |all, s| format!("{all}/{s}"));
    Some(Target {
        collection: segments[at].to_owned(),
        name: name.to_owned(),
        junk: Some(junk).filter(|j| !j.is_empty()),
    })
}

/// A followed reference: where it pointed, the object's name in the generated file, and
/// its position among the objects of its collection that were read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub target: Target,
    pub ours: String,
    pub position: usize,
}

/// The objects of each collection: Azure name → name in the generated file, in the order
/// of the collection's items.
#[derive(Clone, Debug, Default)]
pub struct Index {
    by_collection: HashMap<String, Vec<(String, String)>>,
}

impl Index {
    /// Registers the next object of `collection`: `azure`, written as `ours`.
    pub fn add(&mut self, collection: &str, azure: &str, ours: &str) {
        self.by_collection
            .entry(collection.to_ascii_lowercase())
            .or_default()
            .push((azure.to_owned(), ours.to_owned()));
    }

    /// How many objects of `collection` are registered.
    pub fn len(&self, collection: &str) -> usize {
        self.by_collection
            .get(&collection.to_ascii_lowercase())
            .map_or(0, Vec::len)
    }

    /// The Azure name and our name of the object at `position` of `collection`.
    pub fn entry(&self, collection: &str, position: usize) -> Option<(&str, &str)> {
        let (azure, ours) = self
            .by_collection
            .get(&collection.to_ascii_lowercase())?
            .get(position)?;
        Some((azure, ours))
    }

    /// The position and name in the generated file of `azure` in `collection`; Azure
    /// names are compared without case, as Azure does.
    pub fn find(&self, collection: &str, azure: &str) -> Option<(usize, &str)> {
        let objects = self.by_collection.get(&collection.to_ascii_lowercase())?;
        objects
            .iter()
            .position(|(a, _)| a == azure)
            .or_else(|| {
                objects
                    .iter()
                    .position(|(a, _)| a.eq_ignore_ascii_case(azure))
            })
            .map(|i| (i, objects[i].1.as_str()))
    }

    /// Follows `reference`, which must point into `collection`.
    pub fn follow(
        &self,
        reference: &str,
        collection: &str,
        scope: &dyn Scope,
    ) -> Result<Found, RefError> {
        let target = parse(reference, super::arm::REFERABLE, scope)?;
        if !target.collection.eq_ignore_ascii_case(collection) {
            return Err(RefError::WrongCollection {
                expected: collection.to_owned(),
                found: target,
            });
        }
        match self.find(collection, &target.name) {
            Some((position, ours)) => Ok(Found {
                ours: ours.to_owned(),
                position,
                target,
            }),
            None => Err(RefError::Missing(target)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{arm::REFERABLE, expr::NoScope};

    const GATEWAY: &str = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Network/\
                           applicationGateways/appgw";

    fn target(reference: &str) -> Result<Target, RefError> {
        parse(reference, REFERABLE, &NoScope)
    }

    #[test]
    fn a_plain_id() {
        let found = target(&format!("{GATEWAY}/httpListeners/appGatewayHttpsListener"))
            .expect("a listener");
        assert_eq!(found.collection, "httpListeners");
        assert_eq!(found.name, "appGatewayHttpsListener");
        assert_eq!(found.junk, None);
        // Case of the collection does not matter.
        let found = target(&format!("{GATEWAY}/BACKENDADDRESSPOOLS/pool")).expect("a pool");
        assert_eq!(found.name, "pool");
    }

    #[test]
    fn expressions() {
        let concat =
            "[concat(variables('applicationGatewayID'), '/httpListeners/appGatewayHttpListener')]";
        let found = target(concat).expect("concat");
        assert_eq!(
            (found.collection.as_str(), found.name.as_str()),
            ("httpListeners", "appGatewayHttpListener")
        );
        let resource_id =
            "[resourceId('Microsoft.Network/applicationGateways/httpListeners', 'appgw', 'name')]";
        let found = target(resource_id).expect("resourceId");
        assert_eq!(
            (found.collection.as_str(), found.name.as_str()),
            ("httpListeners", "name")
        );
        // A parent name from a parameter does not matter; the object's name does.
        let resource_id = "[resourceId('Microsoft.Network/applicationGateways/frontendPorts', \
                           parameters('gw'), 'port_80')]";
        assert_eq!(target(resource_id).expect("resourceId").name, "port_80");
        let unknown = "[resourceId('Microsoft.Network/applicationGateways/frontendPorts', \
                       parameters('gw'), parameters('port'))]";
        assert!(matches!(target(unknown), Err(RefError::Unevaluable(_))));
    }

    #[test]
    fn trailing_junk_is_cut_and_kept() {
        // As in Azure's WebSocket page: the end of an ARM expression left in a plain id.
        let found = target(&format!(
            "{GATEWAY}/backendAddressPools/ContosoServerPool')]"
        ))
        .expect("a pool");
        assert_eq!(found.name, "ContosoServerPool");
        assert_eq!(found.junk.as_deref(), Some("')]"));
        let found = target(&format!(
            "{GATEWAY}/frontendPorts/appGatewayFrontendPort443'"
        ))
        .expect("a port");
        assert_eq!(found.name, "appGatewayFrontendPort443");
        // Half an expression, which does not parse, is still read as a path.
        let found = target("[concat(variables('id'), '/probes/health'").expect("a probe");
        assert_eq!(found.name, "health");
    }

    #[test]
    fn no_pair() {
        assert!(matches!(target(""), Err(RefError::Empty)));
        assert!(matches!(target(GATEWAY), Err(RefError::NoPair(_))));
        assert!(matches!(
            target(&format!("{GATEWAY}/httpListeners/")),
            Err(RefError::NoPair(_))
        ));
    }

    #[test]
    fn follow_checks_collection_and_existence() {
        let mut index = Index::default();
        index.add("backendAddressPools", "Web Pool", "Web-Pool");
        index.add("backendAddressPools", "api", "api");
        let id = format!("{GATEWAY}/backendAddressPools/api");
        let found = index
            .follow(&id, "backendAddressPools", &NoScope)
            .expect("found");
        assert_eq!((found.ours.as_str(), found.position), ("api", 1));
        // Azure names compare without case.
        let id = format!("{GATEWAY}/backendAddressPools/API");
        assert!(index.follow(&id, "backendAddressPools", &NoScope).is_ok());
        let missing = format!("{GATEWAY}/backendAddressPools/ContosoServerPool");
        let error = index
            .follow(&missing, "backendAddressPools", &NoScope)
            .expect_err("missing target");
        assert_eq!(
            error.describe(),
            "backendAddressPools/ContosoServerPool is not in the input"
        );
        let wrong = index
            .follow(&id, "backendHttpSettingsCollection", &NoScope)
            .expect_err("a pool is not settings");
        assert!(
            matches!(wrong, RefError::WrongCollection { .. }),
            "{wrong:?}"
        );
    }
}
