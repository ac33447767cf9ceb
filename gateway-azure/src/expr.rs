//! ARM template expressions (`"[concat(variables('id'), '/httpListeners/web')]"`), as far as
//! an import needs them: string literals, `concat`, `resourceId`, `format` with `{N}`
//! placeholders, and `parameters`/`variables` looked up in the template. Anything else
//! evaluates to [`UNKNOWN`] text, which a reference or value must not depend on.

/// Stands for text an expression produces that cannot be known without deploying (e.g.
/// `reference(...)`, `subscription().id`, a parameter without a default).
pub const UNKNOWN: char = '\u{E000}';

/// `parameters('x')` and `variables('x')` of the template, each as a string if it is one.
pub trait Scope {
    fn parameter(&self, name: &str) -> Option<String>;
    fn variable(&self, name: &str) -> Option<String>;
}

/// A scope that knows nothing.
#[cfg(test)]
pub struct NoScope;

#[cfg(test)]
impl Scope for NoScope {
    fn parameter(&self, _: &str) -> Option<String> {
        None
    }
    fn variable(&self, _: &str) -> Option<String> {
        None
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Text(String),
    /// Numbers, booleans-as-calls and anything after `.` or `[`: used only as text.
    Other(String),
    Call {
        name: String,
        args: Vec<Expr>,
    },
    /// `f(...).property` or `f(...)[0]`: nothing we evaluate.
    Access,
}

/// Whether `text` is an expression (`[...]`, but not the `[[` escape of a literal `[`).
pub fn is_expression(text: &str) -> bool {
    let text = text.trim();
    text.starts_with('[') && !text.starts_with("[[") && text.ends_with(']')
}

/// The text `value` stands for: itself, or the evaluation of the expression it holds,
/// with [`UNKNOWN`] where a part cannot be evaluated. `depth` bounds variables referring
/// to variables.
pub fn evaluate(value: &str, scope: &dyn Scope, depth: u8) -> String {
    if !is_expression(value) {
        return value
            .strip_prefix("[[")
            .map_or_else(|| value.to_owned(), |rest| format!("[{rest}"));
    }
    let inner = &value.trim()[1..value.trim().len() - 1];
    let mut parser = Parser {
        chars: inner.chars().collect(),
        at: 0,
    };
    match parser.expression() {
        Some(expr) if parser.rest_is_blank() => eval(&expr, scope, depth),
        _ => UNKNOWN.to_string(),
    }
}

/// Evaluates `expr`.
fn eval(expr: &Expr, scope: &dyn Scope, depth: u8) -> String {
    let arg = |args: &[Expr], i: usize| {
        args.get(i)
            .map_or_else(|| UNKNOWN.to_string(), |a| eval(a, scope, depth))
    };
    match expr {
        Expr::Text(text) | Expr::Other(text) => text.clone(),
        Expr::Access => UNKNOWN.to_string(),
        Expr::Call { name, args } => match name.to_ascii_lowercase().as_str() {
            "concat" => args.iter().map(|a| eval(a, scope, depth)).collect(),
            "format" => format_call(&arg(args, 0), &args[1.min(args.len())..], scope, depth),
            "resourceid" => {
                let args: Vec<String> = args.iter().map(|a| eval(a, scope, depth)).collect();
                resource_id(&args)
            }
            "parameters" | "variables" if depth > 0 => {
                let key = arg(args, 0);
                let found = if name.eq_ignore_ascii_case("parameters") {
                    scope.parameter(&key)
                } else {
                    scope.variable(&key)
                };
                found.map_or_else(
                    || UNKNOWN.to_string(),
                    |text| evaluate(&text, scope, depth - 1),
                )
            }
            _ => UNKNOWN.to_string(),
        },
    }
}

/// `format('{0}/{1}', a, b)`.
fn format_call(template: &str, args: &[Expr], scope: &dyn Scope, depth: u8) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let index = rest[open + 1..open + close].split(':').next().unwrap_or("");
        match index.trim().parse::<usize>().ok().and_then(|i| args.get(i)) {
            Some(arg) => out.push_str(&eval(arg, scope, depth)),
            None => out.push(UNKNOWN),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// `resourceId([subscription, group,] 'Namespace/type/child', name, childName)` as the
/// path of the resource: `/providers/Namespace/type/name/child/childName`.
fn resource_id(args: &[String]) -> String {
    let Some(at) = args.iter().position(|a| a.contains('/') && a.contains('.')) else {
        return UNKNOWN.to_string();
    };
    let mut levels = args[at].split('/').filter(|s| !s.is_empty());
    let namespace = levels.next().unwrap_or_default();
    let mut path = format!("/providers/{namespace}");
    let mut names = args[at + 1..].iter();
    for level in levels {
        let name = names
            .next()
            .map_or_else(|| UNKNOWN.to_string(), Clone::clone);
        path.push_str(&format!("/{level}/{name}"));
    }
    path
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_blank(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn rest_is_blank(&mut self) -> bool {
        self.skip_blank();
        self.at == self.chars.len()
    }

    fn expression(&mut self) -> Option<Expr> {
        self.skip_blank();
        let expr = match self.peek()? {
            '\'' => Expr::Text(self.literal()?),
            c if c.is_ascii_alphabetic() => {
                let name = self.word();
                self.skip_blank();
                if self.peek() == Some('(') {
                    self.at += 1;
                    Expr::Call {
                        name,
                        args: self.arguments()?,
                    }
                } else {
                    Expr::Other(name)
                }
            }
            c if c.is_ascii_digit() || c == '-' => {
                self.at += 1;
                let mut text = c.to_string();
                text.push_str(&self.word());
                Expr::Other(text)
            }
            _ => return None,
        };
        self.skip_blank();
        // `.property` or `[index]` after a value: not evaluated.
        if matches!(self.peek(), Some('.' | '[')) {
            while let Some(c) = self.peek() {
                if c == ',' || c == ')' {
                    break;
                }
                if c == '\'' {
                    self.literal()?;
                } else {
                    self.at += 1;
                }
            }
            return Some(Expr::Access);
        }
        Some(expr)
    }

    fn word(&mut self) -> String {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// `'text'`, with `''` for a quote.
    fn literal(&mut self) -> Option<String> {
        self.at += 1;
        let mut text = String::new();
        loop {
            let c = self.peek()?;
            self.at += 1;
            if c == '\'' {
                if self.peek() == Some('\'') {
                    self.at += 1;
                    text.push('\'');
                } else {
                    return Some(text);
                }
            } else {
                text.push(c);
            }
        }
    }

    /// After `(`: arguments up to and including `)`.
    fn arguments(&mut self) -> Option<Vec<Expr>> {
        let mut args = Vec::new();
        self.skip_blank();
        if self.peek() == Some(')') {
            self.at += 1;
            return Some(args);
        }
        loop {
            args.push(self.expression()?);
            self.skip_blank();
            match self.peek()? {
                ',' => self.at += 1,
                ')' => {
                    self.at += 1;
                    return Some(args);
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Template(HashMap<&'static str, &'static str>);

    impl Scope for Template {
        fn parameter(&self, name: &str) -> Option<String> {
            self.0
                .get(format!("p:{name}").as_str())
                .map(|s| (*s).to_owned())
        }
        fn variable(&self, name: &str) -> Option<String> {
            self.0
                .get(format!("v:{name}").as_str())
                .map(|s| (*s).to_owned())
        }
    }

    fn template() -> Template {
        Template(HashMap::from([
            ("p:gatewayName", "appgw"),
            (
                "v:gatewayId",
                "[resourceId('Microsoft.Network/applicationGateways', parameters('gatewayName'))]",
            ),
            ("v:listener", "web-listener"),
        ]))
    }

    #[test]
    fn plain_text_is_itself() {
        assert_eq!(evaluate("web", &NoScope, 4), "web");
        assert_eq!(
            evaluate("[[not an expression]", &NoScope, 4),
            "[not an expression]"
        );
    }

    #[test]
    fn concat_of_a_variable_and_a_literal() {
        let text = "[concat(variables('gatewayId'), '/httpListeners/appGatewayHttpListener')]";
        assert_eq!(
            evaluate(text, &template(), 4),
            "/providers/Microsoft.Network/applicationGateways/appgw/httpListeners/appGatewayHttpListener"
        );
        // Without the template, the prefix is unknown but the tail is still there.
        let unknown = evaluate(text, &NoScope, 4);
        assert!(unknown.starts_with(UNKNOWN), "{unknown}");
        assert!(unknown.ends_with("/httpListeners/appGatewayHttpListener"));
    }

    #[test]
    fn resource_id_of_a_child_resource() {
        let text = "[resourceId('Microsoft.Network/applicationGateways/httpListeners', \
                    parameters('gatewayName'), variables('listener'))]";
        assert_eq!(
            evaluate(text, &template(), 4),
            "/providers/Microsoft.Network/applicationGateways/appgw/httpListeners/web-listener"
        );
        // A subscription and a resource group first change nothing.
        let text =
            "[resourceId('sub', 'rg', 'Microsoft.Network/applicationGateways/probes', 'gw', 'p1')]";
        assert!(evaluate(text, &NoScope, 4).ends_with("/probes/p1"));
    }

    #[test]
    fn format_quotes_and_unknown_functions() {
        assert_eq!(
            evaluate("[format('{0}/probes/{1}', 'x', 'it''s')]", &NoScope, 4),
            "x/probes/it's"
        );
        let text = "[concat(reference('pip').dnsSettings.fqdn, '/x')]";
        assert_eq!(evaluate(text, &NoScope, 4), format!("{UNKNOWN}/x"));
        // Broken expressions evaluate to nothing known.
        assert_eq!(evaluate("[concat('a']", &NoScope, 4), UNKNOWN.to_string());
        assert_eq!(
            evaluate("[concat('a') 'b']", &NoScope, 4),
            UNKNOWN.to_string()
        );
    }

    #[test]
    fn variables_referring_to_themselves_stop() {
        let looping = Template(HashMap::from([("v:a", "[variables('a')]")]));
        assert_eq!(
            evaluate("[variables('a')]", &looping, 4),
            UNKNOWN.to_string()
        );
    }
}
