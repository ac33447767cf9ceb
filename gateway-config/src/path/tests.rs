use super::*;

fn normal(path: &str) -> Result<(String, String), PathError> {
    normal_with(path, PathPolicy::default())
}

fn normal_with(path: &str, policy: PathPolicy) -> Result<(String, String), PathError> {
    normalize(path, policy).map(|n| (n.as_str().to_owned(), n.routed().to_owned()))
}

fn ok(path: &str) -> String {
    normal(path).unwrap_or_else(|e| panic!("{path:?}: {e}")).0
}

#[test]
fn normal_paths_are_borrowed_and_unchanged() {
    for path in [
        "/",
        "/a",
        "/a/",
        "/a/b.c/d~e_f-g",
        "/a%20b",
        "/a%C3%A9",
        "/.well-known/x",
    ] {
        let n = normalize(path, PathPolicy::default()).expect(path);
        assert_eq!(n.as_str(), path);
        assert!(!n.changed(), "{path:?}");
        assert_eq!(n.routed(), path);
    }
}

/// Every spelling of `/admin/secret` the issue found going past an `/admin/*` rule.
#[test]
fn the_spellings_of_one_path_have_one_normal_form() {
    for spelling in [
        "/admin/secret",
        "/%61dmin/secret",
        "/%61%64%6D%69%6E/secret",
        "//admin/secret",
        "/admin//secret",
        "/./admin/secret",
        "/x/../admin/secret",
        "/x/y/../../admin/secret",
        "/../admin/secret",
        "/%2e/admin/secret",
        "/%2E%2E/admin/secret",
        "/x/%2e%2e/admin/./secret",
        "/admin/secret/.",
        "/admin/x/..//secret",
    ] {
        let want = if spelling.ends_with("/.") {
            "/admin/secret/"
        } else {
            "/admin/secret"
        };
        assert_eq!(ok(spelling), want, "{spelling:?}");
    }
}

#[test]
fn parameters_stay_for_the_backend_and_leave_the_routed_path() {
    assert_eq!(
        normal("/admin;x/secret"),
        Ok(("/admin;x/secret".into(), "/admin/secret".into()))
    );
    assert_eq!(
        normal("/a;jsessionid=1"),
        Ok(("/a;jsessionid=1".into(), "/a".into()))
    );
    // A segment of parameters only is empty once they go, and merged.
    assert_eq!(
        normal("/admin/;x/secret").map(|n| n.1),
        Ok("/admin/secret".into())
    );
    for dotted in ["/x/..;/admin", "/x/.;/admin", "/%2e%2e;x/admin"] {
        assert_eq!(normal(dotted), Err(PathError::DotParameters), "{dotted:?}");
    }
}

#[test]
fn percent_encodings_are_decoded_when_unreserved_and_canonical_otherwise() {
    assert_eq!(ok("/%7Euser/%41-%5f"), "/~user/A-_");
    assert_eq!(ok("/a%20c%c3%a9%3b%00"), "/a%20c%C3%A9%3B%00");
    // Decoded once: `%252e` is a `%2e` in the name, not a dot.
    assert_eq!(ok("/%252e%252e/admin"), "/%252e%252e/admin");
    // `%3B` is data, not a parameter separator: the rules see it decoded only after the
    // parameters are gone.
    assert_eq!(normal("/a%3Bb;x"), Ok(("/a%3Bb;x".into(), "/a;b".into())));
    for bad in ["/a%", "/a%2", "/a%zz", "/%g0", "/a%%41"] {
        assert_eq!(normal(bad), Err(PathError::BadPercent), "{bad:?}");
    }
}

#[test]
fn escaped_slashes_follow_the_policy() {
    let with = |escaped_slashes| PathPolicy {
        escaped_slashes,
        ..PathPolicy::default()
    };
    for path in ["/admin%2fsecret", "/admin%2Fsecret", "/admin%5csecret"] {
        assert_eq!(normal(path), Err(PathError::EscapedSlash), "{path:?}");
        assert_eq!(
            normal_with(path, with(EscapedSlashes::Decode)).map(|n| n.0),
            Ok("/admin/secret".into()),
            "{path:?}"
        );
    }
    assert_eq!(
        normal_with("/a%2fb/../c", with(EscapedSlashes::Keep)).map(|n| n.0),
        Ok("/c".into()),
        "a kept %2F does not separate segments"
    );
    assert_eq!(
        normal_with("/a%2f..%5C/c", with(EscapedSlashes::Keep)).map(|n| n.0),
        Ok("/a%2F..%5C/c".into())
    );
    assert_eq!(
        normal_with("/x/..%2f..%2fadmin", with(EscapedSlashes::Decode)).map(|n| n.0),
        Ok("/admin".into()),
        "decoded slashes separate dot segments too"
    );
}

#[test]
fn backslashes_and_relative_paths_are_refused() {
    assert_eq!(normal("/admin\\secret"), Err(PathError::Backslash));
    assert_eq!(normal("admin"), Err(PathError::NotAbsolute));
    assert_eq!(normal(""), Err(PathError::NotAbsolute));
}

#[test]
fn dot_segments_follow_rfc_3986() {
    // RFC 3986 §5.2.4 and §5.4's examples, as absolute paths.
    for (path, want) in [
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../..", "/"),
        ("/.", "/"),
        ("/a/.../b", "/a/.../b"),
        ("/a/..b/.c", "/a/..b/.c"),
    ] {
        assert_eq!(ok(path), want, "{path:?}");
    }
}

#[test]
fn slashes_merge_unless_told_not_to() {
    assert_eq!(ok("///a//b///"), "/a/b/");
    assert_eq!(ok("//"), "/");
    let keep = PathPolicy {
        merge_slashes: false,
        ..PathPolicy::default()
    };
    assert_eq!(
        normal_with("//a//b/", keep).map(|n| n.0),
        Ok("//a//b/".into())
    );
    assert_eq!(
        normal_with("/a//../b", keep).map(|n| n.0),
        Ok("/a/b".into()),
        "without merging, `..` takes the empty segment"
    );
}

#[test]
fn normalising_twice_changes_nothing() {
    let policies = [
        PathPolicy::default(),
        PathPolicy {
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        },
        PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Decode,
        },
    ];
    let paths = [
        "/a/./b/../../c//d",
        "/%2e%2e/%2E/x",
        "/a%2f%2e%2e/b",
        "/;/x",
        "/a/..;b/../c",
        "/x/%2e%2e%2f%2e%2e/y",
        "/%41%42/%7e/",
        "/a;b/c;d/../e",
    ];
    for policy in policies {
        for path in paths {
            let Ok(once) = normalize(path, policy) else {
                continue;
            };
            let twice = normalize(once.as_str(), policy).expect("a normal path normalises");
            assert_eq!(twice.as_str(), once.as_str(), "{path:?} {policy:?}");
            assert!(!twice.changed(), "{path:?} {policy:?}");
        }
    }
}

#[test]
fn the_rules_see_encoded_printable_characters_decoded() {
    for (path, routed) in [
        ("/%40admin/secret", "/@admin/secret"),
        ("/v1/items%3Abatch", "/v1/items:batch"),
        ("/a%2Bb/%7B%7D", "/a+b/{}"),
        // Not `/`, `\`, `%` (no second decoding), space or bytes past ASCII.
        ("/a%2525/%20/%C3%A9", "/a%2525/%20/%C3%A9"),
    ] {
        assert_eq!(normal(path).map(|n| n.1), Ok(routed.to_owned()), "{path:?}");
    }
    let keep = PathPolicy {
        escaped_slashes: EscapedSlashes::Keep,
        ..PathPolicy::default()
    };
    assert_eq!(
        normal_with("/a%2Fb%5C", keep).map(|n| n.1),
        Ok("/a%2Fb%5C".to_owned())
    );
}
