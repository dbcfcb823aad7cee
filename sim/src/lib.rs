//! Tessera scene core (being built).
