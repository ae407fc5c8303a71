//! The Compendium conformance suite (filled in by the conformance issue).
