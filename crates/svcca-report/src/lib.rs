//! svcca-report (being built)
