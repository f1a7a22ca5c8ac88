//! Integration tests of the alert rules and dashboard: their structure, runbook and promtool.

mod promtool;
mod rules;
