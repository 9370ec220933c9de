//! The success service: playbooks, calls to action (CTAs), the account
//! timeline and playbook effectiveness (docs/design.md section 6). It follows
//! the scoring, revenue, funnel and accounts feeds through stored cursors,
//! turns the events its playbooks name into CTAs with an owner and a due
//! date, and measures each playbook against a held-out comparison group.
//!
//! Layout: `domain` (pure rules), `convert` (wire <-> domain), `storage`
//! (tables and queries), `service` (units of work), `feeds` (the consumers),
//! `api` (thin tonic handlers).

pub mod domain;
