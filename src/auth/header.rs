//! The token in a request header: missing, not text, or not a token are told apart.

use super::AuthError;
use crate::token::{Token, TokenError};

/// The token in `header` (the bytes of `Authorization` or the configured token header).
pub(super) fn parse_header(header: Option<&[u8]>) -> Result<Token, AuthError> {
    let Some(bytes) = header else {
        return Err(AuthError::Missing);
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| AuthError::Malformed(TokenError::InvalidCharacter))?;
    match Token::parse(text) {
        Ok(t) => Ok(t),
        Err(TokenError::Empty) => Err(AuthError::Missing),
        Err(e) => Err(AuthError::Malformed(e)),
    }
}
