//! A conformance suite for Compendium relays: checks **any** server implementation
//! against docs/protocol.md, and tells its author exactly where it departs.
//!
//! - Cases ([`case::Case`]) have stable ids tied to rules (`3.2/1` = rule 3.2, case 1),
//!   a level (MUST/SHOULD), a description and the quoted requirement. Most are data:
//!   session files (`conformance/sessions/*.json`, schema `conformance/session.schema.json`,
//!   reusable by any language); the rest are code ([`code_cases`]).
//! - Verdicts ([`report::Verdict`]): PASS, FAIL, NON-STRICT, UNSUPPORTED, SKIPPED; closing
//!   behaviour is judged separately.
//! - [`recorder`] turns a real session through a proxy into a session file.
//! - [`load`] measures any relay's throughput and latency while checking every delivery.

pub mod bindings;
pub mod case;
pub mod code_cases;
pub mod jsoneq;
pub mod load;
pub mod matcher;
pub mod peer;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod session;
mod v2_cases;
