//! svcca-proto (being built)
