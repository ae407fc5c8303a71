//! The Compendium client library (filled in by the client issue).
