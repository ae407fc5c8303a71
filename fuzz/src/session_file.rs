//! The conformance suite's session-file loader (`session::parse`), which reads files
//! written by people and by other projects.
//!
//! Properties: nothing panics; a rejection names the file; whatever loads survives
//! serialising and loading again unchanged, and becomes a case.

use compendium_conformance::case::Case;
use compendium_conformance::session;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match session::parse("fuzz.json", text) {
        Err(err) => {
            assert_eq!(err.file, "fuzz.json");
            assert!(!err.message.is_empty());
        }
        Ok(loaded) => {
            let again = serde_json::to_string(&loaded).expect("a loaded session serialises");
            let reloaded = session::parse("again.json", &again)
                .unwrap_or_else(|e| panic!("a loaded session does not load again: {e}"));
            assert_eq!(reloaded, loaded);
            let _ = Case::from_session(loaded);
        }
    }
}
