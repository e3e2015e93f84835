use super::*;
use crate::testutil::{config, path, table};
use proptest::prelude::*;
use serde_json::json;

fn find_name(t: &RouteTable, host: &str, method: &str, p: &str) -> Option<String> {
    t.find(host, method, &path(p))
        .map(|(_, r)| r.name().to_string())
}

#[test]
fn lookup_table() {
    let t = table(json!([
        {"name": "exact", "match": {"path": "/login"}},
        {"name": "api-get", "match": {"path_prefix": "/api", "methods": ["GET"]}},
        {"name": "api-slash", "match": {"path_prefix": "/api/"}},
        {"name": "api", "match": {"path_prefix": "/api"}},
        {"name": "host", "match": {"hosts": ["Admin.Example.com"], "path_prefix": "/"}},
        {"name": "wild", "match": {"hosts": ["*.example.com"]}},
        {"name": "re", "match": {"path_regex": "/items/[0-9]+"}},
        {"name": "semi", "match": {"path": "/admin;x"}},
        {"name": "admin", "match": {"path_prefix": "/admin"}},
        {"name": "fallback", "match": {"path_prefix": "/"}}
    ]));
    let cases: &[(&str, &str, &str, &str)] = &[
        ("x.org", "GET", "/login", "exact"),
        // A trailing `/` is ignored: Express, Koa and ASP.NET Core serve
        // `/login/` as `/login`, so the exact route judges it.
        ("x.org", "GET", "/login/", "exact"),
        // Case is ignored by default: Express, IIS and macOS/Windows file servers
        // serve `/Login` as `/login`, so it must be judged by the same route.
        ("x.org", "GET", "/Login", "exact"),
        ("x.org", "GET", "/ADMIN/secret", "admin"),
        ("x.org", "GET", "/%41dmin/secret", "admin"),
        ("x.org", "GET", "/admin%3Bx/secret", "admin"),
        ("x.org", "GET", "/Admin%3bx", "semi"),
        ("x.org", "GET", "/ITEMS/42", "re"),
        ("x.org", "GET", "/api", "api-get"),
        ("x.org", "get", "/api/x", "api-get"),
        ("x.org", "POST", "/api/x", "api-slash"),
        ("x.org", "POST", "/api/", "api-slash"),
        // `path_prefix: /api/` is `/api` (a trailing `/` is ignored on both sides).
        ("x.org", "POST", "/api", "api-slash"),
        ("x.org", "POST", "/apix", "fallback"),
        ("admin.example.com", "GET", "/anything", "host"),
        ("ADMIN.EXAMPLE.COM:8443", "GET", "/anything", "host"),
        ("admin.example.com.", "GET", "/anything", "host"),
        ("a.example.com", "GET", "/x", "wild"),
        ("a.b.example.com", "GET", "/x", "wild"),
        ("example.com", "GET", "/x", "fallback"),
        ("badexample.com", "GET", "/x", "fallback"),
        ("x.org", "GET", "/items/42", "re"),
        ("x.org", "GET", "/items/42/more", "fallback"),
        ("x.org", "GET", "/prefix/items/42", "fallback"),
        // Path parameters are ignored for matching (Tomcat serves `/admin;y` as
        // `/admin`): both are judged by the route written for `/admin`.
        ("x.org", "GET", "/admin;x", "semi"),
        ("x.org", "GET", "/admin;y", "semi"),
        ("x.org", "GET", "/admin;y/z", "admin"),
        ("x.org", "GET", "/admin/x", "admin"),
        ("x.org", "GET", "/", "fallback"),
        ("[::1]:8080", "GET", "/", "fallback"),
    ];
    for (host, method, p, want) in cases {
        assert_eq!(
            find_name(&t, host, method, p).as_deref(),
            Some(*want),
            "{method} {host}{p}"
        );
    }
}

#[test]
fn a_trailing_slash_or_a_parameter_segment_does_not_dodge_a_route() {
    let t = table(json!([
        {"name": "re", "match": {"path_regex": "/admin/.*"}},
        {"name": "private", "match": {"path": "/private"}},
        {"name": "fallback", "match": {"path_prefix": "/"}}
    ]));
    for (p, want) in [
        ("/admin/x", "re"),
        ("/admin/", "re"),
        ("/admin//", "re"),
        ("/admin/;x", "re"),
        ("/admin", "fallback"),
        ("/;x/private", "private"),
        ("/;/private", "private"),
        ("/%3Bx/private/", "private"),
    ] {
        assert_eq!(
            find_name(&t, "x.org", "GET", p).as_deref(),
            Some(want),
            "{p}"
        );
    }
}

#[test]
fn head_is_judged_by_the_get_route() {
    let t = table(json!([
        {"name": "get", "match": {"path_prefix": "/g", "methods": ["GET"]}},
        {"name": "fallback", "match": {"path_prefix": "/"}}
    ]));
    assert_eq!(find_name(&t, "x.org", "HEAD", "/g").as_deref(), Some("get"));
    assert_eq!(
        find_name(&t, "x.org", "POST", "/g").as_deref(),
        Some("fallback")
    );
}

#[test]
fn case_sensitive_paths_opt_out() {
    let mut c = config(json!({"routes": [
        {"name": "admin", "match": {"path_prefix": "/admin"}},
        {"name": "re", "match": {"path_regex": "/Items/[0-9]+"}},
        {"name": "fallback", "match": {"path_prefix": "/"}}
    ]}));
    c.server.case_sensitive_paths = true;
    let t = RouteTable::compile(&c).unwrap();
    let find = |p: &str| {
        let n = t.normalize(p).unwrap();
        t.find("x.org", "GET", &n)
            .map(|(_, r)| r.name().to_string())
    };
    assert_eq!(find("/admin/x").as_deref(), Some("admin"));
    assert_eq!(find("/Admin/x").as_deref(), Some("fallback"));
    assert_eq!(find("/Items/1").as_deref(), Some("re"));
    assert_eq!(find("/items/1").as_deref(), Some("fallback"));
    // `%3B` is still a parameter separator.
    assert_eq!(find("/admin%3Bx/y").as_deref(), Some("admin"));
}

#[test]
fn methods_outside_the_standard_set_only_when_named() {
    let t = table(json!([
        {"match": {"path_prefix": "/dav", "methods": ["PROPFIND"]}},
        {"match": {"path_prefix": "/"}}
    ]));
    for m in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PROPFIND",
    ] {
        assert!(t.method_allowed(m), "{m}");
    }
    for m in ["get", "Get", "CONNECT", "propfind", "PURGE", "FOO"] {
        assert!(!t.method_allowed(m), "{m}");
    }
}

#[test]
fn no_route_when_nothing_matches() {
    let t = table(json!([{"match": {"hosts": ["a.example"], "path": "/x"}}]));
    assert_eq!(find_name(&t, "b.example", "GET", "/x"), None);
    assert_eq!(find_name(&t, "a.example", "GET", "/y"), None);
    assert_eq!(
        find_name(&t, "a.example", "GET", "/x").as_deref(),
        Some("route-0")
    );
}

#[test]
fn config_paths_are_normalized() {
    let t = table(json!([
        {"name": "a", "match": {"path": "/caf%c3%a9"}},
        {"name": "b", "match": {"path_prefix": "/x//y/../z"}}
    ]));
    assert_eq!(find_name(&t, "h", "GET", "/café").as_deref(), Some("a"));
    assert_eq!(find_name(&t, "h", "GET", "/x/z/1").as_deref(), Some("b"));
}

#[test]
fn canonical_host_forms() {
    assert_eq!(canonical_host("Example.COM:443"), "example.com");
    assert_eq!(canonical_host("example.com."), "example.com");
    assert_eq!(canonical_host("[::1]:80"), "[::1]");
    assert_eq!(canonical_host("::1"), "::1");
    assert!(matches!(canonical_host("a.b"), Cow::Borrowed(_)));
}

#[test]
fn compile_errors() {
    let cfg = config(json!({"routes": [
        {"name": "ok", "match": {"path": "/"}},
        {"name": "two", "match": {"path": "/a", "path_prefix": "/b"}},
        {"match": {"path_regex": "(", "hosts": ["a.*.com", "x.com:80", "*."], "methods": ["G T"]}},
        {"match": {"path_prefix": "relative"}},
        {"match": {"path": "/a%2Fb"}},
        {"policy": {"allow": [{"paths": ["x"]}]}}
    ]}));
    let errs = RouteTable::compile(&cfg).unwrap_err();
    assert_eq!(errs.len(), 9, "{errs:#?}");
    assert_eq!(
        errs[0],
        "routes[1] (two): match: give only one of `path`, `path_prefix` and `path_regex`"
    );
    assert!(errs[1].starts_with("routes[2]: match.hosts: host `a.*.com`"));
    assert!(errs[2].starts_with("routes[2]: match.hosts: host `x.com:80`: leave out the port"));
    assert!(errs[3].starts_with("routes[2]: match.hosts: host `*.`"));
    assert!(errs[4].starts_with("routes[2]: match.path_regex:"));
    assert_eq!(
        errs[5],
        "routes[2]: match.methods: `G T` is not an HTTP method"
    );
    assert_eq!(
        errs[6],
        "routes[3]: match.path_prefix: `relative` must start with `/`"
    );
    assert_eq!(
        errs[7],
        "routes[4]: match.path: `/a%2Fb`: encoded slash (%2F) in path"
    );
    assert_eq!(
        errs[8],
        "routes[5]: policy.allow[0]: paths: `x` must start with `/`"
    );
}

#[test]
fn regex_is_anchored() {
    let t = table(json!([{"name": "r", "match": {"path_regex": "/a|/b"}}]));
    assert_eq!(find_name(&t, "h", "GET", "/a").as_deref(), Some("r"));
    assert_eq!(find_name(&t, "h", "GET", "/b").as_deref(), Some("r"));
    assert_eq!(find_name(&t, "h", "GET", "/ab"), None);
    assert_eq!(find_name(&t, "h", "GET", "/x/a"), None);
}

#[test]
fn explain_to_caller_route_overrides_global() {
    let cfg = config(json!({
        "policy": {"explain_to_caller": "full"},
        "routes": [
            {"match": {"path": "/a"}},
            {"match": {"path": "/b"}, "policy": {"explain_to_caller": "none"}}
        ]
    }));
    let t = RouteTable::compile(&cfg).unwrap();
    assert_eq!(t.routes()[0].explain_to_caller(), ExplainToCaller::Full);
    assert_eq!(t.routes()[1].explain_to_caller(), ExplainToCaller::None);
}

#[test]
fn shadowed_routes() {
    let t = table(json!([
        {"name": "api", "match": {"path_prefix": "/api"}},
        {"name": "api-v1", "match": {"path_prefix": "/api/v1"}},
        {"name": "apix", "match": {"path_prefix": "/apix"}},
        {"name": "get-only", "match": {"path": "/x", "methods": ["GET"]}},
        // GET takes HEAD with it (a server runs its GET handler for HEAD).
        {"name": "x-get-head", "match": {"path": "/x", "methods": ["GET", "HEAD"]}},
        {"name": "x-get", "match": {"path": "/x", "methods": ["get"]}},
        {"name": "wild", "match": {"hosts": ["*.example.com"], "path_prefix": "/w"}},
        {"name": "wild-sub", "match": {"hosts": ["*.a.example.com", "b.example.com"], "path": "/w/1"}},
        {"name": "bare", "match": {"hosts": ["example.com"], "path_prefix": "/w"}},
        {"name": "re", "match": {"path_regex": "/r/[0-9]+"}},
        {"name": "re-exact", "match": {"path": "/r/7"}},
        {"name": "all", "match": {}},
        {"name": "after-all", "match": {"path": "/zzz"}, "policy": {"allow": [{}, {"groups": ["x"]}]}}
    ]));
    assert_eq!(
        t.shadowed(),
        vec![
            "routes[1] (api-v1) (path_prefix /api/v1) can never match: routes[0] (api) (path_prefix /api) before it matches every request it would",
            "routes[4] (x-get-head) (path /x) can never match: routes[3] (get-only) (path /x) before it matches every request it would",
            "routes[5] (x-get) (path /x) can never match: routes[3] (get-only) (path /x) before it matches every request it would",
            "routes[7] (wild-sub) (path /w/1) can never match: routes[6] (wild) (path_prefix /w) before it matches every request it would",
            "routes[10] (re-exact) (path /r/7) can never match: routes[9] (re) (path_regex /r/[0-9]+) before it matches every request it would",
            "routes[12] (after-all) (path /zzz) can never match: routes[11] (all) (any path) before it matches every request it would",
            "routes[12] (after-all): rule allow[1] can never decide: allow[0] before it matches every request",
        ]
    );
}

/// A reproducible pseudo-random source (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "x.a.example.com",
    "other.org",
    "example.com",
];
/// Request hosts: the route hosts plus ones no route names.
const REQUEST_HOSTS: &[&str] = &[
    "a.example.com",
    "B.Example.com:8443",
    "x.a.example.com",
    "other.org",
    "example.com",
    "unknown.net",
];
const SEGS: &[&str] = &["api", "v1", "users", "orders", "x", "admin", "svc1", "svc2"];
const METHODS: &[&str] = &["GET", "POST", "DELETE", "PUT"];

fn random_routes(rng: &mut Lcg, n: usize) -> serde_json::Value {
    let mut routes = Vec::new();
    for i in 0..n {
        let mut m = serde_json::Map::new();
        let host_kind = rng.next() % 4;
        match host_kind {
            0 => {}
            1 => {
                m.insert("hosts".into(), json!([rng.pick(HOSTS)]));
            }
            2 => {
                m.insert("hosts".into(), json!(["*.example.com"]));
            }
            _ => {
                m.insert("hosts".into(), json!([rng.pick(HOSTS), "*.a.example.com"]));
            }
        }
        let depth = rng.next() % 3;
        let first = format!("/s{}", rng.next() % 40);
        let p: String = first
            + &(0..depth)
                .map(|_| format!("/{}", rng.pick(SEGS)))
                .collect::<String>();
        match rng.next() % 10 {
            0..=3 => {
                m.insert("path_prefix".into(), json!(p));
            }
            4..=6 => {
                m.insert("path".into(), json!(p));
            }
            7 => {
                m.insert("path_regex".into(), json!(format!("{p}(/[a-z0-9]+)?")));
            }
            8 => {
                m.insert("path_prefix".into(), json!(format!("{p}/")));
            }
            // No path condition, only for host-restricted routes, so that some
            // requests match nothing.
            _ if host_kind != 0 => {}
            _ => {
                m.insert("path_prefix".into(), json!(p));
            }
        }
        if matches!(rng.next() % 3, 0) {
            m.insert(
                "methods".into(),
                json!([rng.pick(METHODS), rng.pick(METHODS)]),
            );
        }
        routes.push(json!({"name": format!("r{i}"), "match": m}));
    }
    json!(routes)
}

#[test]
fn indexed_lookup_equals_linear_scan_on_1000_routes() {
    let mut rng = Lcg(7);
    let t = table(random_routes(&mut rng, 1000));
    let mut matched = std::collections::HashSet::new();
    let mut misses = 0;
    for _ in 0..20_000 {
        let depth = rng.next() % 3;
        let first = format!("/s{}", rng.next() % 40);
        let mut p: String = first
            + &(0..depth)
                .map(|_| format!("/{}", rng.pick(SEGS)))
                .collect::<String>();
        if matches!(rng.next() % 8, 0) {
            p = format!("/zzz{p}");
        }
        let p = if matches!(rng.next() % 5, 0) {
            format!("{p}/")
        } else {
            p
        };
        let np = path(&p);
        let host = rng.pick(REQUEST_HOSTS);
        let method = rng.pick(METHODS);
        let fast = t.find(host, method, &np).map(|(i, _)| i);
        let slow = t
            .find_linear_canonical(
                &canonical_host(host),
                method,
                np.matching(),
                np.matching_slashed(),
            )
            .map(|(i, _)| i);
        assert_eq!(fast, slow, "{method} {host} {p}");
        match fast {
            Some(i) => {
                matched.insert(i);
            }
            None => misses += 1,
        }
    }
    // The generator must exercise many routes and some misses.
    assert!(matched.len() > 100, "{}", matched.len());
    assert!(misses > 100, "{misses}");
}

proptest! {
    #[test]
    fn indexed_lookup_equals_linear_scan(seed in any::<u64>(), host_i in 0usize..6, first in 0u64..40, segs in proptest::collection::vec(0usize..8, 0..3), m in 0usize..4) {
        let mut rng = Lcg(seed);
        let t = table(random_routes(&mut rng, 60));
        let p: String = format!("/s{first}") + &segs.iter().map(|s| format!("/{}", SEGS[*s])).collect::<String>();
        let np = path(&p);
        let host = REQUEST_HOSTS[host_i];
        let fast = t.find(host, METHODS[m], &np).map(|(i, _)| i);
        let slow = t.find_linear_canonical(&canonical_host(host), METHODS[m], np.matching(), np.matching_slashed()).map(|(i, _)| i);
        prop_assert_eq!(fast, slow);
    }
}

#[test]
fn many_wildcard_depths_fall_back_to_linear_scan() {
    let routes: Vec<serde_json::Value> = (1..=10)
        .map(|d| {
            let suffix: Vec<String> = (0..d).map(|i| format!("l{i}")).collect();
            json!({"name": format!("d{d}"), "match": {"hosts": [format!("*.{}", suffix.join("."))]}})
        })
        .collect();
    let t = table(json!(routes));
    assert_eq!(
        find_name(&t, "x.l0.l1.l2", "GET", "/").as_deref(),
        Some("d3")
    );
    assert_eq!(find_name(&t, "l0.l1.l2", "GET", "/"), None);
}
