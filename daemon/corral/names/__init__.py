"""DNS names, the pure rules (issue 17, DNS-aware egress): what a name is once normalised, how
far a learned name may generalise (never wider than a registrable domain, by the Public Suffix
List), and what a DNS answer says (which addresses a queried name led to). No state and no I/O
here; docs/names.md says the rules with examples.

- ``domains``: normalising names, registrable domains (PSL, bundled snapshot), search-domain
  expansions (``api.openai.com.default.svc.cluster.local`` is ``api.openai.com``).
- ``generalise``: name patterns (``?``/``*`` inside one label), learned from evidence by the
  rules of path patterns, matched label by label.
- ``answers``: a DNS message (UDP payload or TCP frame) to the queried name, its CNAME chain
  and the addresses with their TTLs, parsed with dnspython.
"""
