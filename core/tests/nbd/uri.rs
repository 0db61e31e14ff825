//! URIs in libnbd's syntax, and clear refusals.

use xfull_core::nbd::uri::Target;
use xfull_core::nbd::{NbdError, NbdUri};

fn ok(s: &str) -> NbdUri {
    NbdUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn bad(s: &str) -> String {
    let e = NbdUri::parse(s).expect_err(s);
    assert!(matches!(e, NbdError::InvalidUri { .. }), "{s}: {e:?}");
    let msg = e.to_string();
    assert!(msg.contains(s), "the message names the URI: {msg}");
    msg
}

#[test]
fn unix_sockets() {
    let u = ok("nbd+unix:///disk0?socket=/run/x.sock");
    assert_eq!(u.target, Target::Unix("/run/x.sock".into()));
    assert_eq!(u.export, "disk0");
    let u = ok("nbd+unix://?socket=/tmp/s");
    assert_eq!(u.export, "");
    let u = ok("nbd+unix:///?socket=/tmp/s");
    assert_eq!(u.export, "");
    let u = ok("nbd+unix:///a%20b%2Fc?socket=/tmp/with%20space");
    assert_eq!(u.export, "a b/c");
    assert_eq!(u.target, Target::Unix("/tmp/with space".into()));
    // Display gives back a URI that parses to the same.
    assert_eq!(ok(&u.to_string()), u);
}

#[test]
fn tcp() {
    let u = ok("nbd://example.com/disk");
    assert_eq!(
        u.target,
        Target::Tcp {
            host: "example.com".into(),
            port: 10809
        }
    );
    assert_eq!(u.export, "disk");
    let u = ok("nbd://127.0.0.1:2000");
    assert_eq!(
        u.target,
        Target::Tcp {
            host: "127.0.0.1".into(),
            port: 2000
        }
    );
    assert_eq!(u.export, "");
    let u = ok("nbd://[::1]:10810/x");
    assert_eq!(
        u.target,
        Target::Tcp {
            host: "::1".into(),
            port: 10810
        }
    );
    assert_eq!(ok(&u.to_string()), u);
    assert_eq!(ok("NBD://h//abs").export, "/abs");
}

#[test]
fn refusals_name_the_uri_and_the_problem() {
    assert!(bad("/dev/nbd0").contains("expected nbd://"));
    assert!(bad("http://x/y").contains("unknown scheme"));
    assert!(bad("nbd+unix:///x").contains("socket="));
    assert!(bad("nbd+unix://host/x?socket=/s").contains("takes no host"));
    assert!(bad("nbd+unix:///x?socket=/s&tls=on").contains("unsupported query parameter"));
    assert!(bad("nbd+unix:///x?socket=/a&socket=/b").contains("twice"));
    assert!(bad("nbd://h:0/x").contains("bad port"));
    assert!(bad("nbd://h:99999/x").contains("bad port"));
    assert!(bad("nbd://h:abc/x").contains("bad port"));
    assert!(bad("nbd:///x").contains("needs a host"));
    assert!(bad("nbd://[::1/x").contains("unclosed"));
    assert!(bad("nbd://u@h/x").contains("user names"));
    assert!(bad("nbd://h/%zz").contains("percent"));
    assert!(bad("nbd://h/x#frag").contains("fragment"));
    assert!(bad("nbd+vsock://1/x").contains("vsock"));
    let long = format!("nbd://h/{}", "a".repeat(5000));
    NbdUri::parse(&long).expect_err("too long");
}

#[test]
fn tls_is_refused_with_a_way_out() {
    for s in ["nbds://h/x", "nbds+unix:///x?socket=/s"] {
        let e = NbdUri::parse(s).expect_err(s);
        assert!(matches!(e, NbdError::TlsUnsupported { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("unix socket") && msg.contains("SSH tunnel"),
            "{msg}"
        );
    }
}
