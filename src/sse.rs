//! A Server-Sent Events parser (the WHATWG event-stream format): bytes in as they arrive,
//! whole events out. Every event is bounded: one larger than the limit is an error, never an
//! unbounded buffer.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (`message` when absent).
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` seen so far on the stream.
    pub id: Option<String>,
}

/// An event (or a line) longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event of the stream is larger than the limit of {limit} bytes")]
pub struct TooLarge {
    pub limit: usize,
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting this one belongs to it.
    after_cr: bool,
    name: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    limit: usize,
}

impl Parser {
    pub fn new(limit: usize) -> Parser {
        Parser {
            line: Vec::new(),
            after_cr: false,
            name: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
            limit,
        }
    }

    /// The last event id seen.
    pub fn last_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TooLarge> {
        let mut events = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() + self.data.len() >= self.limit {
                        return Err(TooLarge { limit: self.limit });
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(events)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(Event {
                name: if name.is_empty() {
                    "message".into()
                } else {
                    name
                },
                data,
                id: self.id.clone(),
            });
        }
        if line.first() == Some(&b':') {
            return None; // a comment (heartbeat)
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.name = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_comments_ids_and_line_endings() {
        let mut p = Parser::new(1024);
        let text = "event: unleash-connected\r\nid: 5\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: x\rdata: a\rdata: b\r\r";
        let events = p.feed(text.as_bytes()).unwrap();
        assert_eq!(
            events,
            [
                Event {
                    name: "unleash-connected".into(),
                    data: "{\"a\":1}".into(),
                    id: Some("5".into())
                },
                Event {
                    name: "x".into(),
                    data: "a\nb".into(),
                    id: Some("5".into())
                }
            ]
        );
        assert_eq!(p.last_id(), Some("5"));
    }

    #[test]
    fn events_larger_than_the_limit_are_refused() {
        let mut p = Parser::new(16);
        assert!(p.feed(b"data: 0123456789").is_ok());
        assert_eq!(p.feed(b"abcdef"), Err(TooLarge { limit: 16 }));
    }

    proptest::proptest! {
        /// However the bytes are cut into chunks, the same events come out.
        #[test]
        fn chunking_does_not_change_the_events(cuts in proptest::collection::vec(0usize..120, 0..8)) {
            let text = b"event: a\nid: 1\ndata: {\"x\":[1,2]}\n\n: hb\r\n\r\nevent: b\r\ndata: q\r\n\r\nid: 2\ndata: z\n\n";
            let whole = Parser::new(1024).feed(text).unwrap();
            let mut p = Parser::new(1024);
            let mut got = Vec::new();
            let mut start = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            for cut in cuts.into_iter().map(|c| c.min(text.len())) {
                got.extend(p.feed(&text[start.min(cut)..cut]).unwrap());
                start = start.max(cut);
            }
            got.extend(p.feed(&text[start..]).unwrap());
            proptest::prop_assert_eq!(got, whole);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Parser::new(64).feed(&bytes);
        }
    }
}
