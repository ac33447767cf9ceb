//! The arguments `cargo xtask run` gives to `gateway run`.
use crate::cli::RunArgs;

/// `run` followed by our flags, then the pass-through arguments. A flag that also appears
/// in the pass-through arguments is left out, so the one given after `--` wins.
pub fn gateway_args(args: &RunArgs, demo_backend: &str) -> Vec<String> {
    let backend = args.backend.as_deref().unwrap_or(demo_backend);
    let ours = [
        ("--listen", Some(args.listen.as_str())),
        ("--backend", Some(backend)),
        ("--admin", Some(args.admin.as_str())),
        ("--dataplane", args.dataplane.as_deref()),
    ];
    let mut out = vec!["run".to_owned()];
    for (flag, value) in ours {
        if let Some(value) = value.filter(|_| !mentions(&args.gateway_args, flag)) {
            out.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    out.extend(args.gateway_args.iter().cloned());
    out
}

/// Whether `args` sets `flag`, as `--flag value` or `--flag=value`.
fn mentions(args: &[String], flag: &str) -> bool {
    args.iter().any(|arg| {
        arg == flag
            || arg
                .strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(backend: Option<&str>, extra: &[&str]) -> RunArgs {
        RunArgs {
            listen: "127.0.0.1:8080".into(),
            backend: backend.map(Into::into),
            admin: "127.0.0.1:9090".into(),
            dataplane: None,
            gateway_args: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }

    #[test]
    fn defaults_point_the_gateway_at_the_demo_backend() {
        let args = gateway_args(&run_args(None, &[]), "127.0.0.1:4000");
        let expected =
            "run --listen 127.0.0.1:8080 --backend 127.0.0.1:4000 --admin 127.0.0.1:9090";
        assert_eq!(args.join(" "), expected);
    }

    #[test]
    fn flags_after_double_dash_win() {
        let extra = [
            "--listen=0.0.0.0:80",
            "--dataplane",
            "userspace",
            "--admin",
            "127.0.0.1:9999",
        ];
        let args = gateway_args(&run_args(Some("10.0.0.1:80"), &extra), "127.0.0.1:4000");
        let expected =
            "run --backend 10.0.0.1:80 --listen=0.0.0.0:80 --dataplane userspace --admin 127.0.0.1:9999";
        assert_eq!(args.join(" "), expected);
    }

    #[test]
    fn a_longer_flag_with_the_same_prefix_is_not_an_override() {
        assert!(!mentions(&["--listen-backlog=5".to_owned()], "--listen"));
        assert!(mentions(
            &["--listen".to_owned(), "x".to_owned()],
            "--listen"
        ));
    }
}
