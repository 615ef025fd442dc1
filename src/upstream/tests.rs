#[test]
fn a_redirect_location_is_shown_without_credentials_query_or_control_characters() {
    use super::shown_location;
    assert_eq!(
        shown_location(
            "https://user:pw@unleash.example.com:4243/api/client/features?token=s3cret#x"
        ),
        "https://unleash.example.com:4243/api/client/features"
    );
    assert_eq!(shown_location("/login?next=%2F"), "/login");
    assert_eq!(shown_location("http://a@b@host\r\n/x"), "http://host/x");
    assert_eq!(shown_location(&"x".repeat(1000)).len(), 200);
}

use super::*;

#[test]
fn connection_ids_look_like_uuids_v4() {
    let id = connection_id();
    assert_eq!(id.len(), 36);
    assert_eq!(id.as_bytes()[14], b'4');
    assert!(
        matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
        "{id}"
    );
    assert_ne!(id, connection_id());
}

#[test]
fn outcomes_are_bounded_labels() {
    assert_eq!(UpstreamError::Status(503).outcome(), "server_error");
    assert_eq!(UpstreamError::Status(404).outcome(), "client_error");
    assert_eq!(UpstreamError::Refused(401).outcome(), "refused");
}
