//! API tokens and scopes: every token shape Unleash uses (PROTOCOL.md §1), parsed into a
//! [`Token`] whose `Debug`/`Display` never show the secret, and the [`Scope`] rule
//! (PROTOCOL.md §2) that decides what a token may see.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

mod scope;

pub use scope::{Projects, Scope};

/// Longest token accepted. Unleash secrets are at most ~100 characters; anything much longer is
/// not a token, and refusing it early keeps hashing and comparing cheap.
pub const MAX_TOKEN_LEN: usize = 512;

/// Why a string is not a usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is longer than {MAX_TOKEN_LEN} characters")]
    TooLong,
    #[error("the token contains a space, a control character or a non-ASCII character")]
    InvalidCharacter,
    #[error("expected `<project>:<environment>.<secret>`, but there is no `.` before the secret")]
    MissingSecret,
    #[error("the project part (before `:`) is empty")]
    EmptyProject,
    #[error("the environment part (between `:` and `.`) is empty")]
    EmptyEnvironment,
    #[error("the secret part (after the last `.`) is empty")]
    EmptySecret,
    #[error("`*` as environment is only used by admin tokens (`*:*.<secret>`)")]
    WildcardEnvironment,
    #[error("a v2 secret must be `v2_` followed by letters, digits, `-` and `_`")]
    MalformedV2Secret,
    #[error("a personal access token must be `user:<secret>`")]
    MalformedPersonalAccessToken,
}

/// The project part of a scoped token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectSpec {
    /// `*`: all current and future projects.
    All,
    /// `[]`: several projects; the list is not in the token, only upstream (or configuration)
    /// knows it.
    Listed,
    /// One named project.
    One(String),
}

/// What the string in `Authorization` looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `<project>:<env>.<secret>`, `[]:<env>.<secret>` or `*:<env>.<secret>` (v1 or v2 secret).
    Scoped {
        projects: ProjectSpec,
        environment: String,
    },
    /// `*:*.<secret>`: an admin token, never usable on SDK endpoints.
    Admin,
    /// `user:<secret>`: a personal access token, never usable on SDK endpoints.
    PersonalAccess,
    /// 64 hex characters: a token of Unleash <= 4.3; only upstream can say what it is.
    Legacy,
    /// Any other string: possibly an Unleash-Proxy-style client key configured locally.
    Opaque,
}

/// A parsed token. Holds the raw string; shows only a redacted form.
#[derive(Clone)]
pub struct Token {
    raw: Arc<str>,
    shape: Shape,
    /// Byte offset where the secret starts (used only for redaction).
    secret_start: usize,
}

impl Token {
    /// Parses the value of an `Authorization` header (a `Bearer ` prefix is accepted and
    /// removed, like the Unleash server does) or a configured token.
    pub fn parse(input: &str) -> Result<Token, TokenError> {
        let trimmed = input.trim_matches(|c: char| c == ' ' || c == '\t');
        let raw = strip_bearer(trimmed).trim_start_matches([' ', '\t']);
        if raw.is_empty() || raw.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Empty);
        }
        if raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::InvalidCharacter);
        }
        let (shape, secret_start) = classify(raw)?;
        Ok(Token {
            raw: Arc::from(raw),
            shape,
            secret_start,
        })
    }

    /// The raw token, for the few places that must send or compare it. Never log this.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The environment named in the token, if it names one.
    pub fn environment(&self) -> Option<&str> {
        match &self.shape {
            Shape::Scoped { environment, .. } => Some(environment),
            _ => None,
        }
    }

    /// The scope the token itself states, when it states all of it (`[]` tokens do not).
    pub fn stated_scope(&self) -> Option<Scope> {
        match &self.shape {
            Shape::Scoped {
                projects,
                environment,
            } => {
                let projects = match projects {
                    ProjectSpec::All => Projects::All,
                    ProjectSpec::One(p) => Projects::from_names([p.as_str()]),
                    ProjectSpec::Listed => return None,
                };
                Some(Scope::new(environment.clone(), projects))
            }
            _ => None,
        }
    }

    /// Compares the raw token with `other` in time that does not depend on where they differ.
    pub fn ct_eq(&self, other: &str) -> bool {
        self.raw.as_bytes().ct_eq(other.as_bytes()).into()
    }

    /// The redacted form: everything before the secret, then at most 4 characters of it (and
    /// never more than a quarter of it), then `…`.
    pub fn redacted(&self) -> String {
        let (prefix, secret) = self.raw.split_at(self.secret_start.min(self.raw.len()));
        let shown = (secret.len() / 4).min(4);
        let head = secret.get(..shown).unwrap_or("");
        format!("{prefix}{head}…")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.expose())
    }
}
impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.redacted())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn strip_bearer(s: &str) -> &str {
    match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => s.get(7..).unwrap_or(""),
        _ => s,
    }
}

fn classify(raw: &str) -> Result<(Shape, usize), TokenError> {
    if let Some(rest) = raw.strip_prefix("user:") {
        if rest.is_empty() {
            return Err(TokenError::MalformedPersonalAccessToken);
        }
        return Ok((Shape::PersonalAccess, 5));
    }
    let Some((project, env_and_secret)) = raw.split_once(':') else {
        if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok((Shape::Legacy, 0));
        }
        return Ok((Shape::Opaque, 0));
    };
    // Secrets never contain `.`, environment names may ("prod.eu"): split at the last one.
    let Some((environment, secret)) = env_and_secret.rsplit_once('.') else {
        return Err(TokenError::MissingSecret);
    };
    if project.is_empty() {
        return Err(TokenError::EmptyProject);
    }
    if environment.is_empty() {
        return Err(TokenError::EmptyEnvironment);
    }
    if secret.is_empty() {
        return Err(TokenError::EmptySecret);
    }
    if let Some(v2) = secret.strip_prefix("v2_") {
        let valid = !v2.is_empty()
            && v2
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(TokenError::MalformedV2Secret);
        }
    }
    let secret_start = raw.len() - secret.len();
    if environment == "*" {
        return if project == "*" {
            Ok((Shape::Admin, secret_start))
        } else {
            Err(TokenError::WildcardEnvironment)
        };
    }
    let projects = match project {
        "*" => ProjectSpec::All,
        "[]" => ProjectSpec::Listed,
        p => ProjectSpec::One(p.to_string()),
    };
    Ok((
        Shape::Scoped {
            projects,
            environment: environment.to_string(),
        },
        secret_start,
    ))
}

/// The SHA-256 of a raw token, hex: how a token is named where its secret must not be kept
/// (the backup, the fleet's store, the revocation index).
pub fn digest(raw: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(raw.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret from configuration (the backstage token): compared in constant time, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Secret {
        Secret(secret)
    }

    /// The secret itself, to use it (a passphrase). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, in time that does not depend on where they differ.
    pub fn ct_eq(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.len() == given.len() && bool::from(self.0.as_bytes().ct_eq(given))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a token may act as: SDK tokens only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Client (backend) token: the Client API.
    Client,
    /// Frontend token or client key: the Frontend API.
    Frontend,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Client => "client",
            TokenKind::Frontend => "frontend",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scoped(raw: &str) -> (ProjectSpec, String) {
        match Token::parse(raw).map(|t| t.shape) {
            Ok(Shape::Scoped {
                projects,
                environment,
            }) => (projects, environment),
            other => panic!("{raw} parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_every_shape_of_the_table() {
        assert_eq!(
            scoped("default:development.abc"),
            (ProjectSpec::One("default".into()), "development".into())
        );
        assert_eq!(
            scoped("[]:production.927119ed"),
            (ProjectSpec::Listed, "production".into())
        );
        assert_eq!(
            scoped("*:development.6abe28d2"),
            (ProjectSpec::All, "development".into())
        );
        assert_eq!(
            scoped("*:development.v2_HgPFR2dnTVcxJlm2iVnfAQ_iLU-_XGsrUGnnDq-V_9rTFUcc1sHIFdQhz16-ZyfXi0"),
            (ProjectSpec::All, "development".into())
        );
        assert_eq!(
            scoped("default:prod.eu.abc"),
            (ProjectSpec::One("default".into()), "prod.eu".into())
        );
        let shape = |s: &str| Token::parse(s).map(|t| t.shape);
        assert_eq!(
            shape("*:*.realstack-insecure-admin-api-token"),
            Ok(Shape::Admin)
        );
        assert_eq!(shape("user:6f436b50cc497894a9"), Ok(Shape::PersonalAccess));
        assert_eq!(shape(&"a1".repeat(32)), Ok(Shape::Legacy));
        assert_eq!(shape("proxy-client-key"), Ok(Shape::Opaque));
        assert!(shape("Bearer default:development.abc").is_ok());
        assert_eq!(
            Token::parse("bearer  default:development.abc").map(|t| t.expose().to_string()),
            Ok("default:development.abc".to_string())
        );
    }

    #[test]
    fn rejects_malformed_tokens_precisely() {
        let err = |s: &str| Token::parse(s).err();
        assert_eq!(err(""), Some(TokenError::Empty));
        assert_eq!(err("Bearer "), Some(TokenError::Empty));
        assert_eq!(
            err(&"x".repeat(MAX_TOKEN_LEN + 1)),
            Some(TokenError::TooLong)
        );
        assert_eq!(err("abc def"), Some(TokenError::InvalidCharacter));
        assert_eq!(err("abcé"), Some(TokenError::InvalidCharacter));
        assert_eq!(err("default:development"), Some(TokenError::MissingSecret));
        assert_eq!(err(":development.abc"), Some(TokenError::EmptyProject));
        assert_eq!(err("default:.abc"), Some(TokenError::EmptyEnvironment));
        assert_eq!(err("default:development."), Some(TokenError::EmptySecret));
        assert_eq!(err("default:*.abc"), Some(TokenError::WildcardEnvironment));
        assert_eq!(err("*:dev.v2_"), Some(TokenError::MalformedV2Secret));
        assert_eq!(err("*:dev.v2_a$b"), Some(TokenError::MalformedV2Secret));
        assert_eq!(err("user:"), Some(TokenError::MalformedPersonalAccessToken));
    }

    #[test]
    fn never_shows_the_secret() {
        let t = Token::parse("default:development.6abe28d28982917f018e1f2ec6e52c4c").unwrap();
        assert_eq!(t.to_string(), "default:development.6abe…");
        assert_eq!(format!("{t:?}"), "Token(default:development.6abe…)");
        let key = Token::parse("short-key").unwrap();
        assert_eq!(key.to_string(), "sh…");
        let tiny = Token::parse("abc").unwrap();
        assert_eq!(tiny.to_string(), "…");
    }

    #[test]
    fn stated_scope_of_each_shape() {
        let scope = |s: &str| Token::parse(s).unwrap().stated_scope();
        assert_eq!(
            scope("*:development.x"),
            Some(Scope::new("development", Projects::All))
        );
        assert_eq!(
            scope("default:development.x"),
            Some(Scope::new("development", Projects::from_names(["default"])))
        );
        assert_eq!(scope("[]:development.x"), None);
        assert_eq!(scope("*:*.x"), None);
        assert_eq!(scope("key"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}|[ -~]{0,600}") {
            let _ = Token::parse(&s);
        }

        #[test]
        fn parse_round_trips(
            project in "[a-z][a-z0-9_-]{0,12}|\\*|\\[\\]",
            env in "[a-z][a-z0-9_.-]{0,12}",
            secret in "[0-9a-f]{8,64}|v2_[A-Za-z0-9_-]{1,60}",
        ) {
            prop_assume!(!env.ends_with('.'));
            let raw = format!("{project}:{env}.{secret}");
            let token = Token::parse(&raw).unwrap();
            prop_assert_eq!(token.expose(), raw.as_str());
            prop_assert_eq!(token.environment(), Some(env.as_str()));
            let again = Token::parse(&format!("Bearer {raw}")).unwrap();
            prop_assert_eq!(again.shape(), token.shape());
            prop_assert!(!token.to_string().contains(&secret));
        }
    }
}
