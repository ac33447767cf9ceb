//! `[[rules]]` with their path rules and redirects: which keys each kind takes, and the
//! listeners, pools and settings they name.

use std::{collections::HashMap, sync::Arc};

use super::{listeners::Listener, names::Names, read, redirects, Checked, Checker};
use crate::{
    defaults,
    document::{Element, Origin},
    matching::{check_name, PathPattern},
    model::{BackendSettings, Forward, PathRule, Pool, Route, Rule, RuleAction, RuleKind},
    path::PathPolicy,
    raw::{RawPathRule, RawRedirect, RawRule},
};

/// Everything a rule may name.
pub struct Targets<'a> {
    pub listener_names: &'a Names,
    pub listeners: &'a [Option<Listener>],
    pub pool_names: &'a Names,
    pub pools: &'a Checked<Pool>,
    pub settings_names: &'a Names,
    pub settings: &'a Checked<BackendSettings>,
    /// How request paths are normalised: path rules must be written in that form.
    pub paths: PathPolicy,
}

/// The rules, and which listener each rule that names a known one uses.
pub struct Rules {
    pub checked: Checked<Rule>,
    /// (rule index, rule origin, listener index), for every rule whose listener is known.
    pub uses: Vec<(usize, Origin, usize)>,
    /// Whether every rule could be read: if not, a listener without a rule may be used by
    /// the unreadable one, so that is not reported.
    pub all_read: bool,
}

pub fn check(elements: &[Element<RawRule>], targets: &Targets<'_>, c: &mut Checker<'_>) -> Rules {
    let mut rules = Rules {
        checked: vec![None; elements.len()],
        uses: Vec::new(),
        all_read: elements.iter().all(|e| e.raw.is_some()),
    };
    let mut priorities: HashMap<u32, String> = HashMap::new();
    for (i, origin, raw) in read(elements) {
        let errors_before = c.errors.len();
        let listener = targets
            .listener_names
            .resolve(&raw.listener, origin, "listener", c);
        if let Some(listener) = listener {
            rules.uses.push((i, origin.clone(), listener));
        }
        if let Some(priority) = raw.priority {
            if !(1..=defaults::RULE_PRIORITY_MAX).contains(&priority) {
                c.error(
                    origin,
                    "priority",
                    format!("priority {priority} is out of range"),
                    format!(
                        "give 1 (tried first) to {}, or remove it",
                        defaults::RULE_PRIORITY_MAX
                    ),
                );
            } else if let Some(other) = priorities.get(&priority) {
                c.error(
                    origin,
                    "priority",
                    format!("priority {priority} is already used by {other}"),
                    "give each rule its own priority",
                );
            } else {
                priorities.insert(priority, origin.key.clone());
            }
        }
        let action = action(origin, raw, listener, targets, c);
        if let (Some(action), true) = (action, c.errors.len() == errors_before) {
            rules.checked[i] = Some(Arc::new(Rule {
                name: raw.name.clone(),
                listener: raw.listener.clone(),
                priority: raw.priority,
                action,
            }));
        }
    }
    rules
}

fn action(
    origin: &Origin,
    raw: &RawRule,
    listener: Option<usize>,
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<RuleAction> {
    let present = [
        ("backend_pool", raw.backend_pool.is_some()),
        ("backend_settings", raw.backend_settings.is_some()),
        ("redirect", raw.redirect.is_some()),
        ("default_backend_pool", raw.default_backend_pool.is_some()),
        (
            "default_backend_settings",
            raw.default_backend_settings.is_some(),
        ),
        ("default_redirect", raw.default_redirect.is_some()),
        ("path_rules", raw.path_rules.is_some()),
    ];
    let allowed: &[&str] = match raw.kind {
        RuleKind::Basic => &["backend_pool", "backend_settings"],
        RuleKind::PathBased => &[
            "default_backend_pool",
            "default_backend_settings",
            "default_redirect",
            "path_rules",
        ],
        RuleKind::Redirect => &["redirect"],
    };
    for (field, _) in present
        .iter()
        .filter(|(f, set)| *set && !allowed.contains(f))
    {
        c.error(
            origin,
            field,
            format!("a {} rule takes no {field}", raw.kind.as_str()),
            format!(
                "remove {field}, or change kind (basic takes backend_pool + backend_settings; \
                 path_based takes path_rules + default_backend_pool + default_backend_settings \
                 or default_redirect; redirect takes redirect)"
            ),
        );
    }
    match raw.kind {
        RuleKind::Basic => forward(
            origin,
            ("backend_pool", raw.backend_pool.as_deref()),
            ("backend_settings", raw.backend_settings.as_deref()),
            targets,
            c,
        )
        .map(RuleAction::Basic),
        RuleKind::Redirect => {
            let Some(redirect) = &raw.redirect else {
                c.error(
                    origin,
                    "redirect",
                    "a redirect rule needs redirect",
                    "add redirect = { target_listener = \"...\" } or { target_url = \"https://...\" }",
                );
                return None;
            };
            redirects::check(origin, "redirect", redirect, listener, targets, c)
                .map(RuleAction::Redirect)
        }
        RuleKind::PathBased => path_based(origin, raw, listener, targets, c),
    }
}

fn path_based(
    origin: &Origin,
    raw: &RawRule,
    listener: Option<usize>,
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<RuleAction> {
    let default = route(
        origin,
        ("default_backend_pool", raw.default_backend_pool.as_deref()),
        (
            "default_backend_settings",
            raw.default_backend_settings.as_deref(),
        ),
        ("default_redirect", raw.default_redirect.as_ref()),
        listener,
        targets,
        c,
    );
    let elements = raw.path_rules.as_deref().unwrap_or_default();
    if elements.is_empty() {
        c.error(
            origin,
            "path_rules",
            "a path_based rule needs at least one path rule",
            "add [[rules.path_rules]] entries (name, paths, and a pool + settings or a redirect), or use kind = \"basic\"",
        );
    }
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut paths: HashMap<PathPattern, String> = HashMap::new();
    let mut path_rules = Vec::new();
    for (_, path_origin, path_raw) in read(elements) {
        if let Err(invalid) = check_name(&path_raw.name) {
            c.invalid(path_origin, "name", invalid);
        } else if let Some(first) = names.insert(&path_raw.name, &path_origin.key) {
            c.error(
                path_origin,
                "name",
                format!(
                    "path rule name {:?} is already used by {first}",
                    path_raw.name
                ),
                "give each path rule of a rule its own name",
            );
        }
        if let Some(rule) = path_rule(path_origin, path_raw, &mut paths, listener, targets, c) {
            path_rules.push(rule);
        }
    }
    let default = default?;
    (path_rules.len() == elements.len()).then_some(RuleAction::PathBased {
        path_rules,
        default,
    })
}

fn path_rule(
    origin: &Origin,
    raw: &RawPathRule,
    seen: &mut HashMap<PathPattern, String>,
    listener: Option<usize>,
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<PathRule> {
    if raw.paths.is_empty() {
        c.error(
            origin,
            "paths",
            "paths is empty",
            "list the paths this rule takes, e.g. [\"/api/*\", \"/ws\"]",
        );
    }
    let mut paths = Vec::new();
    for (j, text) in raw.paths.iter().enumerate() {
        let field = format!("paths[{j}]");
        match PathPattern::parse_rule(text, targets.paths) {
            Ok(pattern) => {
                if let Some(first) = seen.get(&pattern) {
                    c.error(
                        origin,
                        &field,
                        format!("path {text:?} is already matched by {first}"),
                        "list each path once per rule; the first path rule that names it wins",
                    );
                } else {
                    seen.insert(pattern.clone(), origin.key_of(&field));
                }
                paths.push(pattern);
            }
            Err(invalid) => c.invalid(origin, &field, invalid),
        }
    }
    let route = route(
        origin,
        ("backend_pool", raw.backend_pool.as_deref()),
        ("backend_settings", raw.backend_settings.as_deref()),
        ("redirect", raw.redirect.as_ref()),
        listener,
        targets,
        c,
    )?;
    (paths.len() == raw.paths.len() && !paths.is_empty()).then(|| PathRule {
        name: raw.name.clone(),
        paths,
        route,
    })
}

/// A pool + settings, or a redirect: exactly one of the two.
fn route(
    origin: &Origin,
    pool: (&str, Option<&str>),
    settings: (&str, Option<&str>),
    redirect: (&str, Option<&RawRedirect>),
    listener: Option<usize>,
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<Route> {
    let forwards = pool.1.is_some() || settings.1.is_some();
    match (forwards, redirect.1) {
        (true, Some(_)) => {
            c.error(
                origin,
                redirect.0,
                format!(
                    "both {} + {} and {} are set",
                    pool.0, settings.0, redirect.0
                ),
                format!(
                    "keep one: forward with {} + {}, or redirect",
                    pool.0, settings.0
                ),
            );
            None
        }
        (false, None) => {
            c.error(
                origin,
                pool.0,
                format!(
                    "neither {} + {} nor {} is set",
                    pool.0, settings.0, redirect.0
                ),
                format!(
                    "set {} and {} to forward, or {} to redirect",
                    pool.0, settings.0, redirect.0
                ),
            );
            None
        }
        (true, None) => forward(origin, pool, settings, targets, c).map(Route::Forward),
        (false, Some(raw)) => {
            redirects::check(origin, redirect.0, raw, listener, targets, c).map(Route::Redirect)
        }
    }
}

/// A pool and settings, both required.
fn forward(
    origin: &Origin,
    (pool_field, pool): (&str, Option<&str>),
    (settings_field, settings): (&str, Option<&str>),
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<Forward> {
    let mut lookup = |field: &str, name: Option<&str>, names: &Names| {
        let Some(name) = name else {
            c.error(
                origin,
                field,
                format!("{field} is missing"),
                format!("set {field} to the name of a {} entry", names.kind().table),
            );
            return None;
        };
        names.resolve(name, origin, field, c)
    };
    let pool = lookup(pool_field, pool, targets.pool_names);
    let settings = lookup(settings_field, settings, targets.settings_names);
    Some(Forward {
        pool: targets.pools.get(pool?)?.clone()?,
        settings: targets.settings.get(settings?)?.clone()?,
    })
}
