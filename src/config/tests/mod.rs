use super::*;
use crate::token::Shape;
use std::io::Write as _;

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load(args: &[&str]) -> Result<Invocation, ConfigError> {
    let mut all = vec!["flagpost"];
    all.extend_from_slice(args);
    Config::from_args(all)
}

fn serve(args: &[&str]) -> Config {
    match load(args) {
        Ok(Invocation::Serve(c)) => c,
        other => panic!("expected a config to serve, got {other:?}"),
    }
}

fn error(args: &[&str]) -> String {
    match load(args) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

const BASE: &str = r#"
mode = "offline"
[server]
port = 4000
[offline]
features_file = "features.json"
client_tokens = ["*:development.client-secret-1234"]
frontend_tokens = ["default:development.frontend-secret-5678"]
"#;

fn offline(c: &Config) -> &OfflineConfig {
    match &c.mode {
        Mode::Offline(o) => o,
        Mode::Edge(_) => panic!("edge mode"),
    }
}

#[test]
fn the_shipped_config_toml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let c = serve(&["--config", path]);
    assert_eq!(c.server.listen.unwrap().to_string(), "127.0.0.1:3063");
    let o = offline(&c);
    assert!(o.features_file.ends_with("examples/features.json"));
    assert!(o.features_file.exists(), "{}", o.features_file.display());
    assert!(o.tokens.iter().any(|t| t.kind == TokenKind::Client));
    assert!(o.tokens.iter().any(|t| *t.token.shape() == Shape::Opaque));
    assert_eq!(c.cors.allowed_origins, AllowedOrigins::Any);
}

#[test]
fn the_file_sets_values_and_flags_override_it() {
    let f = write(BASE);
    let path = f.path().to_str().unwrap();
    let c = serve(&["--config", path]);
    assert_eq!(c.server.listen.unwrap().port(), 4000);
    assert_eq!(c.server.listen.unwrap().ip().to_string(), "0.0.0.0");
    assert_eq!(offline(&c).reload_interval, Some(Duration::from_secs(5)));
    assert!(offline(&c)
        .features_file
        .starts_with(f.path().parent().unwrap()));

    let c = serve(&[
        "--config",
        path,
        "--port",
        "5000",
        "offline",
        "--reload-interval",
        "0",
    ]);
    assert_eq!(c.server.listen.unwrap().port(), 5000);
    assert_eq!(offline(&c).reload_interval, None);

    // A global flag after the subcommand counts too.
    let c = serve(&[
        "--config",
        path,
        "offline",
        "--port",
        "5001",
        "-c",
        "*:production.x1234567,default:development.z1234567",
    ]);
    assert_eq!(c.server.listen.unwrap().port(), 5001);
    // Flags replace the file's token list.
    let c = serve(&[
        "--config",
        path,
        "offline",
        "--client-tokens",
        "*:production.x1234567,*:development.y1234567",
    ]);
    assert_eq!(offline(&c).tokens.len(), 3);
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let e = error(&["--config", "/nonexistent/flagpost.toml", "offline"]);
    assert!(e.contains("/nonexistent/flagpost.toml"), "{e}");
}

#[test]
fn edge_shape_offline_command() {
    let c = serve(&[
        "--config",
        "/dev/null",
        "--port",
        "3100",
        "offline",
        "--bootstrap-file",
        "f.json",
        "--client-tokens",
        "*:development.a1234567,default:production.b1234567",
        "--frontend-tokens",
        "default:production.c1234567",
        "--client-keys",
        "my-proxy-key@development",
        "--reload-interval",
        "2",
    ]);
    let o = offline(&c);
    assert_eq!(o.features_file, PathBuf::from("f.json"));
    assert_eq!(o.reload_interval, Some(Duration::from_secs(2)));
    assert_eq!(o.tokens.len(), 4);
    let key = o
        .tokens
        .iter()
        .find(|t| t.token.expose() == "my-proxy-key")
        .unwrap();
    assert_eq!(key.kind, TokenKind::Frontend);
    assert_eq!(key.scope, Scope::new("development", Projects::All));
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let f = write("mode = \"offline\"\n[server]\nprot = 1\n");
    let e = error(&["--config", f.path().to_str().unwrap()]);
    assert!(
        e.starts_with("server.prot: line 3: unknown field `prot`"),
        "{e}"
    );
}

#[test]
fn durations_need_units_in_the_file() {
    let f = write(&BASE.replace("port = 4000", "port = 4000\nshutdown_grace = \"15\""));
    let e = error(&["--config", f.path().to_str().unwrap()]);
    assert!(e.starts_with("server.shutdown_grace"), "{e}");
    assert!(e.contains("\"15s\""), "{e}");
}

#[test]
fn multi_project_tokens_need_their_projects() {
    let f = write(&BASE.replace(
        "client_tokens = [\"*:development.client-secret-1234\"]",
        "client_tokens = [\"[]:development.client-secret-1234\"]",
    ));
    let e = error(&["--config", f.path().to_str().unwrap()]);
    assert!(e.contains("`[]` token"), "{e}");
    assert!(!e.contains("client-secret-1234"), "secret leaked: {e}");

    let f = write(&BASE.replace(
        "client_tokens = [\"*:development.client-secret-1234\"]",
        "client_tokens = [{ token = \"[]:development.client-secret-1234\", projects = [\"default\", \"checkout\"] }]",
    ));
    let c = serve(&["--config", f.path().to_str().unwrap()]);
    let t = &offline(&c).tokens[0];
    assert_eq!(
        t.scope.projects,
        Projects::from_names(["default", "checkout"])
    );
}

#[test]
fn tokens_that_could_never_be_served_are_warned_about() {
    let f = write(&BASE.replace(
        "frontend_tokens = [\"default:development.frontend-secret-5678\"]",
        "frontend_tokens = [\"default:production.frontend-secret-5678\"]",
    ));
    let c = serve(&["--config", f.path().to_str().unwrap()]);
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("scope_not_covered"), "{warnings:?}");
    assert!(warnings[0].contains("\"production\""), "{warnings:?}");
    assert!(
        !warnings[0].contains("frontend-secret-5678"),
        "secret leaked: {warnings:?}"
    );
    assert!(serve(&["--config", write(BASE).path().to_str().unwrap()])
        .warnings()
        .is_empty());

    let f = write(&BASE.replace("client_tokens = [\"*:development.client-secret-1234\"]", ""));
    assert!(error(&["--config", f.path().to_str().unwrap()]).contains("no client token"));
}

#[test]
fn admin_and_malformed_tokens_are_refused_without_echoing_them() {
    for bad in [
        "*:*.admin-secret-9999",
        "user:pat-secret-9999",
        "default:dev",
        "plainstring-9999",
    ] {
        let f = write(&BASE.replace("*:development.client-secret-1234", bad));
        let e = error(&["--config", f.path().to_str().unwrap()]);
        assert!(e.contains("offline.client_tokens[0]"), "{e}");
        assert!(!e.contains("9999"), "secret leaked: {e}");
    }
}

#[test]
fn check_config_prints_without_secrets() {
    let f = write(BASE);
    let c = match load(&["--config", f.path().to_str().unwrap(), "check-config"]) {
        Ok(Invocation::CheckConfig(c)) => c,
        other => panic!("{other:?}"),
    };
    let text = c.to_redacted_toml();
    assert!(text.contains("port = 4000"), "{text}");
    assert!(text.contains("*:development.clie…"), "{text}");
    assert!(!text.contains("client-secret-1234"), "{text}");
    assert!(!text.contains("frontend-secret-5678"), "{text}");
    // The printed configuration reads back as a valid file.
    let back = RawFile::parse(&text).map_err(|e| e.1).unwrap();
    assert_eq!(back.server.port, Some(4000));
    assert!(matches!(
        load(&["--config", f.path().to_str().unwrap(), "--check-config"]),
        Ok(Invocation::CheckConfig(_))
    ));
}

#[test]
fn bad_command_line_values_are_errors() {
    assert!(matches!(
        load(&["--config", "/dev/null", "--port", "70000", "offline"]),
        Err(ConfigError::Cli(_))
    ));
    assert!(matches!(
        load(&[
            "--config",
            "/dev/null",
            "offline",
            "--reload-interval",
            "soon"
        ]),
        Err(ConfigError::Cli(_))
    ));
    let e = error(&[
        "--config",
        "/dev/null",
        "--interface",
        "localhost",
        "offline",
        "-b",
        "f",
        "-c",
        "*:d.x",
    ]);
    assert!(e.starts_with("server.interface"), "{e}");
}

#[test]
fn no_mode_anywhere_is_explained() {
    let e = error(&["--config", "/dev/null"]);
    assert!(e.contains("mode"), "{e}");
}

#[test]
fn edge_mode_from_the_command_line() {
    let c = serve(&[
        "--config",
        "/dev/null",
        "edge",
        "--upstream-url",
        "https://unleash.example.com/api/",
        "--tokens",
        "*:development.abc12345678,[]:production.def12345678",
        "-H",
        "X-Api-Key: top-secret-header",
        "--features-refresh-interval-seconds",
        "30",
    ]);
    let Mode::Edge(e) = &c.mode else {
        panic!("not edge")
    };
    assert_eq!(e.upstream_url, "https://unleash.example.com");
    assert_eq!(e.tokens.len(), 2);
    assert_eq!(e.refresh_interval, Duration::from_secs(30));
    assert_eq!(e.token_revalidation_interval, Duration::from_secs(3600));
    assert_eq!(e.invalid_token_ttl, Duration::from_secs(60));
    assert_eq!(e.upstream_max_body_size, 32 * 1024 * 1024);
    assert_eq!(
        (e.validate_caller_budget, e.validate_total_budget),
        (100, 1000)
    );
    assert_eq!(
        e.custom_client_headers,
        [("X-Api-Key".to_string(), "top-secret-header".to_string())]
    );
    assert!(
        c.warnings().iter().any(|w| w.contains("ends in /api")),
        "{:?}",
        c.warnings()
    );
    let text = c.to_redacted_toml();
    assert!(text.contains("X-Api-Key: <redacted>"), "{text}");
    assert!(
        !text.contains("top-secret-header") && !text.contains("abc12345678"),
        "{text}"
    );
}

#[test]
fn edge_mode_refuses_tokens_it_can_never_use() {
    for (bad, needle) in [
        ("*:*.admin-secret-9999", "admin"),
        ("user:pat-secret-9999", "admin or personal"),
        ("some-key-9999", "not an Unleash token"),
    ] {
        let e = error(&[
            "--config",
            "/dev/null",
            "edge",
            "-u",
            "http://u.test",
            "-t",
            bad,
        ]);
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains("9999"), "secret leaked: {e}");
    }
    let e = error(&["--config", "/dev/null", "edge", "-u", "http://u.test"]);
    assert!(e.contains("at least one client token"), "{e}");
    let e = error(&[
        "--config",
        "/dev/null",
        "edge",
        "-u",
        "ftp://u.test",
        "-t",
        "*:d.x",
    ]);
    assert!(e.starts_with("edge.upstream_url"), "{e}");
    let e = error(&[
        "--config",
        "/dev/null",
        "edge",
        "-u",
        "http://user:pw@u.test",
        "-t",
        "*:d.x",
    ]);
    assert!(e.contains("credentials"), "{e}");
    let e = error(&[
        "--config",
        "/dev/null",
        "edge",
        "-u",
        "http://u.test",
        "-t",
        "*:d.x",
        "-H",
        "NoColon",
    ]);
    assert!(e.contains("Name: value"), "{e}");
}

#[test]
fn edge_mode_from_the_file() {
    let f = write(
        "mode = \"edge\"\n[edge]\nupstream_url = \"http://unleash:4242\"\ntokens = [\"*:development.abc12345678\"]\n\
         refresh_interval = \"5s\"\ntoken_cache_size = 50\nupstream_max_body_size = \"4MiB\"\n\
         validate_caller_budget = 10\nvalidate_total_budget = 20\n",
    );
    let c = serve(&["--config", f.path().to_str().unwrap()]);
    let Mode::Edge(e) = &c.mode else {
        panic!("not edge")
    };
    assert_eq!(e.refresh_interval, Duration::from_secs(5));
    assert_eq!(e.token_cache_size, 50);
    assert_eq!(e.upstream_url, "http://unleash:4242");
    assert_eq!(e.upstream_max_body_size, 4 * 1024 * 1024);
    assert_eq!(
        (e.validate_caller_budget, e.validate_total_budget),
        (10, 20)
    );
    // Flags override the file.
    let c = serve(&[
        "--config",
        f.path().to_str().unwrap(),
        "edge",
        "--upstream-max-body-size",
        "64MiB",
        "--validate-caller-budget",
        "5",
        "--validate-total-budget",
        "7",
    ]);
    let Mode::Edge(e) = &c.mode else {
        panic!("not edge")
    };
    assert_eq!(e.upstream_max_body_size, 64 * 1024 * 1024);
    assert_eq!((e.validate_caller_budget, e.validate_total_budget), (5, 7));
    assert_eq!(e.token_cache_size, 50, "the file's other keys stay");
    let text = c.to_redacted_toml();
    assert!(
        text.contains("upstream_max_body_size = \"64MiB\""),
        "{text}"
    );
}

mod sections;

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn the_file_parser_never_panics(text in "\\PC{0,300}") {
            let _ = RawFile::parse(&text);
        }

        #[test]
        fn config_shaped_garbage_is_an_error_or_a_config(
            section in "(server|tls|cors|frontend|log|usage|offline|edge)",
            key in "[a-z_]{1,24}",
            value in "(\"[ -~]{0,20}\"|[0-9]{1,12}|true|false|\\[[ -~]{0,20}\\]|\\{[ -~]{0,20}\\})",
        ) {
            let text = format!("mode = \"offline\"\n[{section}]\n{key} = {value}\n");
            let f = write(&text);
            match load(&["--config", f.path().to_str().unwrap()]) {
                Ok(_) => {}
                Err(ConfigError::Invalid { key, problem }) => {
                    prop_assert!(!key.is_empty() && !problem.is_empty());
                    prop_assert!(!problem.contains('\n'), "one line: {problem}");
                }
                Err(ConfigError::Cli(_)) => {}
            }
        }
    }
}
