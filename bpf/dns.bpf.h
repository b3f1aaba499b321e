/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * DNS-aware egress (issue 17), included by corral.bpf.c before the connect programs: read an
 * agent's DNS answers (UDP or TCP from port 53) on its sockets' receive path, before the application
 * can read them; when the queried name is allowed for the agent's connect list (dns_names),
 * put the answer's A and AAAA addresses into dns_addrs until their TTL (at most a day) plus a
 * grace has passed. judge_net allows a connect to such an address on one of the name's ports
 * (dns_allowed). Attached at the cgroup root with the connect programs where Backends.dns
 * says so; docs/names.md has the rules and what is not done yet.
 */
#ifndef CORRAL_DNS_BPF_H
#define CORRAL_DNS_BPF_H

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define DNS_PORT 53
#define LOOPBACK_IFINDEX 1 /* lo is the first device of every network namespace */

#define DNS_BUF CORRAL_DNS_MSG_MAX
#define DNS_MASK (DNS_BUF - 1)
#define DNS_HEADER 12
#define DNS_ANSWERS_MAX 16
/* a day: a hostile TTL (2^31 s) must not keep an address allowed for ever */
#define DNS_TTL_MAX 86400
/* the question's name as read, before reversing: a power of two, for masking */
#define FWD_LEN 256
#define FWD_MASK (FWD_LEN - 1)

/* names of every agent's baseline: ~64 per agent */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, CORRAL_MAX_AGENTS * 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct corral_dns_key);
	__type(value, struct corral_dns_name_val);
} dns_names SEC(".maps");

/* addresses answered: a CDN name has a handful per answer, an agent a few dozen names */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct corral_dns_addr_key);
	__type(value, struct corral_dns_addr_val);
} dns_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct corral_dns_settings);
} dns_settings SEC(".maps");

/* answers' own event budget per agent: a flood of answers never takes its denials' budget */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORRAL_MAX_AGENTS);
	__type(key, __u32);
	__type(value, struct corral_rate);
} dns_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CORRAL_DNS_STATS);
	__type(key, __u32);
	__type(value, __u64);
} dns_stats SEC(".maps");

/* The question's name, label by label, into fwd as "api.openai.com" (lower case). */
struct qname_state {
	__u32 off;    /* next byte of the message */
	__u32 len;    /* message length */
	__u32 rem;    /* bytes left in the current label */
	__u32 out;    /* bytes written to fwd */
	__u32 labels;
	int result;   /* 0: running, 1: done, -1: not read */
};

/* The answer section as a state machine, one step per owner-name label or record (one small
 * body: a loop over labels inside a loop over records is too complex for the verifier). */
struct answer_state {
	__u32 off;
	__u32 len;
	__u32 count;  /* records in the answer section */
	__u32 done;   /* records read */
	__u32 owner;  /* 1: in a record's owner name, 0: at its fixed part */
	__u64 now;
	__u64 grace;
};

struct dns_scratch {
	__u8 msg[DNS_BUF];
	struct corral_net_key src;  /* the answer's source on port 53, as net_allow holds it */
	__u8 fwd[FWD_LEN];
	struct corral_dns_key key;
	struct corral_dns_addr_key akey;
	struct corral_dns_addr_val aval;
	/* the loops' states live here, not on the stack: the verifier then does not follow each
	 * iteration's exact offsets through bpf_loop (it hit its 1M instruction limit) */
	struct qname_state qs;
	struct answer_state as;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_scratch);
} dns_scratch_map SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&dns_stats, &stat);

	if (n)
		(*n)++;
}

/* bpf_loop's context must be on the stack: it only points at the state in the scratch map */
struct loop_ctx {
	struct dns_scratch *sc;
};

static long qname_step(__u64 index, void *ctx)
{
	struct dns_scratch *sc = ((struct loop_ctx *)ctx)->sc;
	struct qname_state *st = &sc->qs;
	__u32 off = st->off, out = st->out;
	__u8 c;

	if (off >= st->len || out >= CORRAL_DNS_NAME_MAX - 1)
		goto fail;
	c = sc->msg[off & DNS_MASK];
	if (!st->rem) {
		if (!c) {
			st->off = off + 1;
			st->result = out ? 1 : -1;
			return 1;
		}
		if (c & 0xC0) /* a compression pointer in the question: no resolver sends one */
			goto fail;
		if (out)
			sc->fwd[out++ & FWD_MASK] = '.';
		st->rem = c;
		st->labels++;
		st->off = off + 1;
		st->out = out;
		return 0;
	}
	if (c >= 'A' && c <= 'Z')
		c += 'a' - 'A';
	sc->fwd[out & FWD_MASK] = c;
	st->out = out + 1;
	st->off = off + 1;
	st->rem--;
	return 0;
fail:
	st->result = -1;
	return 1;
}

#define DNS_STEPS (DNS_ANSWERS_MAX * 8)

static __always_inline __u32 read16(const __u8 *msg, __u32 off)
{
	return ((__u32)msg[off & DNS_MASK] << 8) | msg[(off + 1) & DNS_MASK];
}

static __always_inline void add_address(struct dns_scratch *sc, __u32 off, __u32 rdlen, __u32 ttl)
{
	struct answer_state *st = &sc->as;

	__builtin_memset(sc->akey.addr, 0, sizeof(sc->akey.addr));
	sc->akey.family = rdlen == 4 ? AF_INET : AF_INET6;
	for (int i = 0; i < CORRAL_ADDR_LEN; i++) {
		if (i < rdlen)
			sc->akey.addr[i] = sc->msg[(off + i) & DNS_MASK];
	}
	sc->aval.expires_ns = st->now + (__u64)ttl * NSEC_PER_SEC + st->grace;
	bpf_map_update_elem(&dns_addrs, &sc->akey, &sc->aval, BPF_ANY);
	count(CORRAL_DNS_ADDRESSES);
}

static long answer_step(__u64 index, void *ctx)
{
	struct dns_scratch *sc = ((struct loop_ctx *)ctx)->sc;
	struct answer_state *st = &sc->as;
	__u32 off = st->off, type, rdlen, ttl;
	__u8 c;

	if (st->done >= st->count || off >= st->len)
		return 1;
	if (st->owner) {
		c = sc->msg[off & DNS_MASK];
		if (!c || (c & 0xC0) == 0xC0) {
			st->off = off + (c ? 2 : 1);
			st->owner = 0;
		} else {
			st->off = off + c + 1;
		}
		return 0;
	}
	if (off + 10 > st->len)
		return 1;
	type = read16(sc->msg, off);
	ttl = (read16(sc->msg, off + 4) << 16) | read16(sc->msg, off + 6);
	rdlen = read16(sc->msg, off + 8);
	off += 10;
	if (off + rdlen > st->len)
		return 1;
	if (ttl > DNS_TTL_MAX)
		ttl = DNS_TTL_MAX;
	if ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16))
		add_address(sc, off, rdlen, ttl);
	st->off = off + rdlen;
	st->done++;
	st->owner = 1;
	return 0;
}

/* fwd (out bytes) reversed into key.name, NUL-terminated: "moc.ianepo.ipa". */
static __always_inline void reverse_name(struct dns_scratch *sc, __u32 out)
{
	for (__u32 i = 0; i < CORRAL_DNS_NAME_MAX - 1; i++) {
		if (i >= out)
			break;
		sc->key.name[i] = sc->fwd[(out - 1 - i) & FWD_MASK];
	}
	if (out < CORRAL_DNS_NAME_MAX)
		sc->key.name[out] = 0;
}

/* The DNS message's offset after a UDP or TCP header at off (TCP: after the message's 2-byte
 * length too; *tcp says so). */
static __always_inline __u32 l4_payload(struct __sk_buff *skb, __u32 off, __u8 proto, bool *tcp)
{
	__u8 doff;

	if (proto == IPPROTO_UDP)
		return off + 8;
	if (bpf_skb_load_bytes(skb, off + 12, &doff, 1))
		return 0;
	*tcp = true;
	return off + (doff >> 4) * 4 + 2;
}

/* An answer's payload offset, or 0: not UDP or TCP from port 53. Every packet the agents'
 * sockets receive comes here: the headers are read in place (direct packet access) when they
 * are in the linear part, with one copy otherwise. */
static __always_inline __u32 dns_payload(struct __sk_buff *skb, bool *tcp)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u8 hdr[48];
	__u8 *h = data;
	__u32 off;
	__u8 proto;

	*tcp = false;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (data + 28 > end) {
			if (bpf_skb_load_bytes(skb, 0, hdr, 28))
				return 0;
			h = hdr;
		}
		proto = h[9];
		if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
			return 0;
		off = (h[0] & 0x0F) * 4;
		if (off != 20) { /* IP options: rare, read the port where it is */
			__u16 sport;

			if (bpf_skb_load_bytes(skb, off, &sport, 2) || sport != bpf_htons(DNS_PORT))
				return 0;
			return l4_payload(skb, off, proto, tcp);
		}
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (data + 48 > end) {
			if (bpf_skb_load_bytes(skb, 0, hdr, 48))
				return 0;
			h = hdr;
		}
		proto = h[6];
		/* extension headers before UDP or TCP: not read */
		if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
			return 0;
		off = 40;
	} else {
		return 0;
	}
	if (h[off] != 0 || h[off + 1] != DNS_PORT)
		return 0;
	return l4_payload(skb, off, proto, tcp);
}

/* The agent of the receiving socket's cgroup (corral's registrations and inheritance, as
 * resolve_agent for a task; no cache: answers are few). */
static __always_inline __u32 dns_agent(struct __sk_buff *skb)
{
	__u64 cgid = bpf_skb_cgroup_id(skb);
	struct corral_cgroup_val *v = bpf_map_lookup_elem(&cgroup_agents, &cgid);
	__u32 agent = 0;

	if (v)
		return v->agent;
	for (int level = 0; level < CORRAL_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, level);

		if (!id)
			break;
		v = bpf_map_lookup_elem(&cgroup_agents, &id);
		if (v && (v->flags & CORRAL_CG_INHERIT))
			agent = v->agent;
	}
	return agent;
}

/* Is the answer's source an address the agent's list allows on port 53 (its resolver)? Else
 * anyone on the path who can send from port 53 (the agent itself, bound to a free loopback
 * address) could tell the kernel which address a name has. A resolver that is not a loopback
 * address never answers through the loopback device: a packet there with its address was sent
 * by a local process that bound it (IP_TRANSPARENT, as root). */
static __always_inline bool from_resolver(struct __sk_buff *skb, struct dns_scratch *sc, __u32 list)
{
	struct corral_net_key *k = &sc->src;
	bool lo_src;

	__builtin_memset(k, 0, sizeof(*k));
	k->prefixlen = NET_KEY_BITS;
	k->list = list;
	k->port = bpf_htons(DNS_PORT);
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		k->family = AF_INET;
		if (bpf_skb_load_bytes(skb, 12, k->addr, 4))
			return false;
		lo_src = k->addr[0] == 127;
	} else {
		__u32 *w = (__u32 *)k->addr;

		k->family = AF_INET6;
		if (bpf_skb_load_bytes(skb, 8, k->addr, 16))
			return false;
		lo_src = !w[0] && !w[1] && !w[2] && w[3] == bpf_htonl(1);
	}
	if (skb->ifindex == LOOPBACK_IFINDEX && !lo_src)
		return false;
	return net_allowed(k);
}

/* The question's name allowed for the list: its addresses into dns_addrs. Returns the event's
 * flags (CORRAL_DNS_EF_TAKEN when taken). */
static __always_inline __u16 take_answer(struct dns_scratch *sc, struct loop_ctx *lc, __u32 list,
					 __u32 len, bool resolver, __u64 grace)
{
	struct corral_dns_name_val *name;
	__u32 out;

	if (read16(sc->msg, 4) != 1) /* one question */
		goto unparsed;
	__builtin_memset(&sc->qs, 0, sizeof(sc->qs));
	sc->qs.off = DNS_HEADER;
	sc->qs.len = len;
	bpf_loop(CORRAL_DNS_NAME_MAX, qname_step, lc, 0);
	out = sc->qs.out;
	if (sc->qs.result != 1 || out >= CORRAL_DNS_NAME_MAX)
		goto unparsed;
	reverse_name(sc, out);
	sc->key.list = list;
	sc->key.prefixlen = 32 + 8 * (out + 1);
	name = bpf_map_lookup_elem(&dns_names, &sc->key);
	if (!name || (name->labels && name->labels != sc->qs.labels))
		return 0;
	if (!resolver) {
		count(CORRAL_DNS_FOREIGN);
		return CORRAL_DNS_EF_FOREIGN;
	}
	count(CORRAL_DNS_ALLOWED);
	sc->akey.list = list;
	__builtin_memcpy(sc->aval.port, name->port, sizeof(sc->aval.port));
	sc->as.off = sc->qs.off + 4; /* qtype, qclass */
	sc->as.len = len;
	sc->as.count = read16(sc->msg, 6);
	sc->as.done = 0;
	sc->as.owner = 1;
	sc->as.now = bpf_ktime_get_boot_ns();
	sc->as.grace = grace;
	bpf_loop(DNS_STEPS, answer_step, lc, 0);
	return CORRAL_DNS_EF_TAKEN;
unparsed:
	count(CORRAL_DNS_UNPARSED);
	return 0;
}

/* The agent's budget for answers (corral_agent_cfg.rate_limit per second per CPU), apart from
 * its other events' (may_report). */
static __always_inline bool dns_rate_ok(__u32 agent, struct corral_agent_cfg *cfg, __u64 now)
{
	struct corral_rate *r;

	if (!cfg->rate_limit)
		return true;
	r = bpf_map_lookup_elem(&dns_rate, &agent);
	if (!r)
		return true;
	if (now - r->window_start >= NSEC_PER_SEC) {
		r->window_start = now;
		r->count = 0;
	}
	if (r->count >= cfg->rate_limit)
		return false;
	r->count++;
	return true;
}

/* The answer to user space: learning by name, connects named in events. */
static __always_inline void report_answer(struct __sk_buff *skb, struct dns_scratch *sc, __u32 agent,
					  struct corral_agent_cfg *cfg, __u32 len, __u16 flags)
{
	struct corral_dns_event *x;
	struct corral_event *e;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!dns_rate_ok(agent, cfg, now)) {
		count(CORRAL_DNS_DROPPED);
		return;
	}
	x = bpf_ringbuf_reserve(&events, sizeof(*x), 0);
	if (!x) {
		count(CORRAL_DNS_DROPPED);
		return;
	}
	e = &x->event;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = now;
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->agent = agent;
	e->dim = CORRAL_EVENT_DNS;
	e->mode = cfg->mode[CORRAL_DIM_CONNECT];
	e->backend = CORRAL_BACKEND_CGROUP;
	e->proto = IPPROTO_UDP;
	e->family = sc->src.family;
	e->port = DNS_PORT;
	__builtin_memcpy(e->addr, sc->src.addr, sizeof(e->addr));
	e->list = cfg->list[CORRAL_DIM_CONNECT];
	x->len = len;
	x->flags = flags;
	x->reserved = 0;
	__builtin_memcpy(x->msg, sc->msg, sizeof(x->msg));
	bpf_ringbuf_submit(x, 0);
	count(CORRAL_DNS_REPORTED);
}

SEC("cgroup_skb/ingress")
int corral_cg_dns_ingress(struct __sk_buff *skb)
{
	struct corral_dns_settings *conf;
	struct corral_agent_cfg *cfg;
	struct dns_scratch *sc;
	__u32 zero = 0, off, len, agent, list;
	struct loop_ctx lc;
	__u16 flags, framed;
	bool resolver, tcp;

	off = dns_payload(skb, &tcp);
	if (!off || (tcp && skb->len < off + DNS_HEADER)) /* TCP: a segment with no message */
		return 1;
	agent = dns_agent(skb);
	if (!agent || agent >= CORRAL_MAX_AGENTS)
		return 1;
	cfg = bpf_map_lookup_elem(&agent_cfg, &agent);
	if (!cfg || !cfg->active || cfg->mode[CORRAL_DIM_CONNECT] == CORRAL_MODE_OFF)
		return 1;
	list = cfg->list[CORRAL_DIM_CONNECT];
	sc = bpf_map_lookup_elem(&dns_scratch_map, &zero);
	conf = bpf_map_lookup_elem(&dns_settings, &zero);
	if (!sc || !conf)
		return 1;
	lc.sc = sc;
	count(CORRAL_DNS_ANSWERS);
	if (skb->len <= off + DNS_HEADER)
		goto unparsed;
	len = skb->len - off;
	/* TCP: only a message whole in this segment (its length says so) is read */
	if (tcp && (bpf_skb_load_bytes(skb, off - 2, &framed, 2) || bpf_ntohs(framed) != len))
		goto unparsed;
	flags = len > DNS_BUF ? CORRAL_DNS_EF_CUT : 0;
	if (len > DNS_BUF)
		len = DNS_BUF;
	/* a length the verifier can bound to 1..DNS_BUF (6.1 drops a "!= 0" test on a copy) */
	if (bpf_skb_load_bytes(skb, off, sc->msg, ((len - 1) & DNS_MASK) + 1))
		goto unparsed;
	if (!(sc->msg[2] & 0x80)) /* QR: a query, not an answer */
		goto unparsed;
	resolver = from_resolver(skb, sc, list);
	flags |= take_answer(sc, &lc, list, len, resolver, conf->grace_ns);
	if (!resolver)
		flags |= CORRAL_DNS_EF_FOREIGN;
	/* user space learns from every answer while the agent learns; after, it needs the names
	 * the kernel did not take (to name what is denied or would be) */
	if (cfg->mode[CORRAL_DIM_CONNECT] == CORRAL_MODE_OBSERVE || !(flags & CORRAL_DNS_EF_TAKEN))
		report_answer(skb, sc, agent, cfg, len, flags);
	return 1;
unparsed:
	count(CORRAL_DNS_UNPARSED);
	return 1;
}

/* connect: an address an allowed name's answer gave this list, unexpired, on one of its ports */
static __always_inline bool dns_allowed(struct corral_net_key *k)
{
	struct corral_dns_addr_key ak = {};
	struct corral_dns_addr_val *v;

	ak.list = k->list;
	ak.family = k->family;
	__builtin_memcpy(ak.addr, k->addr, sizeof(ak.addr));
	v = bpf_map_lookup_elem(&dns_addrs, &ak);
	if (!v || v->expires_ns < bpf_ktime_get_boot_ns())
		return false;
	for (int i = 0; i < CORRAL_DNS_PORTS; i++) {
		if (!v->port[i] || v->port[i] == k->port)
			return true;
	}
	return false;
}

#endif /* CORRAL_DNS_BPF_H */
