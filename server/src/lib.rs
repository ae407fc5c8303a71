//! The Compendium relay server (filled in by the server issue).
