--
-- PostgreSQL database dump
--

\restrict 9v6PobavYzNEqDeRNgDNG7LcrTeIRT03XA79qhimrxU95bpK7NFzPblyTpiv4gQ

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: klfixture_v0008; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA klfixture_v0008;


--
-- Name: credit_entries_append_only(); Type: FUNCTION; Schema: klfixture_v0008; Owner: -
--

CREATE FUNCTION klfixture_v0008.credit_entries_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'credit_entries is append-only';
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: account_tokens; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.account_tokens (
    token_hash bytea NOT NULL,
    kind text NOT NULL,
    account_id text NOT NULL COLLATE pg_catalog."C",
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);


--
-- Name: accounts; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.accounts (
    id text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL,
    email text NOT NULL,
    plan text NOT NULL,
    limits text,
    status text NOT NULL,
    time_zone text NOT NULL,
    metadata text,
    password_hash text DEFAULT ''::text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    CONSTRAINT accounts_status_check CHECK ((status = ANY (ARRAY['active'::text, 'suspended'::text, 'closed'::text])))
);


--
-- Name: api_keys; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.api_keys (
    id text NOT NULL COLLATE pg_catalog."C",
    account_id text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL,
    type text NOT NULL,
    environment text NOT NULL,
    prefix text NOT NULL,
    hint text NOT NULL,
    hash bytea NOT NULL,
    prev_hash bytea,
    prev_until bigint,
    models text,
    scopes text,
    status text NOT NULL,
    metadata text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    rotated_at bigint,
    last_used_at bigint,
    expires_at bigint,
    CONSTRAINT api_keys_check CHECK (((prev_hash IS NULL) = (prev_until IS NULL))),
    CONSTRAINT api_keys_environment_check CHECK ((environment = ANY (ARRAY['live'::text, 'test'::text]))),
    CONSTRAINT api_keys_hash_check CHECK ((length(hash) = 32)),
    CONSTRAINT api_keys_prev_hash_check CHECK ((length(prev_hash) = 32)),
    CONSTRAINT api_keys_status_check CHECK ((status = ANY (ARRAY['active'::text, 'revoked'::text, 'disabled'::text])))
)
WITH (fillfactor='80');


--
-- Name: closed_emails; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.closed_emails (
    email_hash bytea NOT NULL,
    closed_at bigint NOT NULL
);


--
-- Name: credit_accounts; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.credit_accounts (
    account_id text NOT NULL COLLATE pg_catalog."C",
    unit text NOT NULL,
    balance numeric NOT NULL,
    held numeric NOT NULL,
    seq bigint NOT NULL,
    version bigint NOT NULL,
    overdraft numeric NOT NULL,
    monthly_cap numeric NOT NULL,
    time_zone text NOT NULL,
    recharge_enabled boolean NOT NULL,
    recharge_threshold numeric NOT NULL,
    recharge_amount numeric NOT NULL,
    recharge_armed boolean NOT NULL,
    recharges bigint NOT NULL,
    month_start bigint NOT NULL,
    month_end bigint NOT NULL,
    month_spent numeric NOT NULL,
    lots bigint DEFAULT 0 NOT NULL,
    hold_due bigint DEFAULT 0 NOT NULL,
    opened_at bigint NOT NULL,
    updated_at bigint NOT NULL
)
WITH (fillfactor='50');


--
-- Name: credit_entries; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.credit_entries (
    account_id text NOT NULL COLLATE pg_catalog."C",
    seq bigint NOT NULL,
    id text NOT NULL COLLATE pg_catalog."C",
    type text NOT NULL,
    amount numeric NOT NULL,
    balance_after numeric NOT NULL,
    reference text NOT NULL,
    description text NOT NULL,
    idem_key text NOT NULL,
    hold_id text NOT NULL,
    expires_at bigint,
    created_at bigint NOT NULL
);


--
-- Name: credit_holds; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.credit_holds (
    id text NOT NULL COLLATE pg_catalog."C",
    account_id text NOT NULL COLLATE pg_catalog."C",
    amount numeric NOT NULL,
    state text NOT NULL,
    reference text NOT NULL,
    idem_key text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    resolved_at bigint,
    actual numeric NOT NULL,
    charged numeric NOT NULL,
    entry_id text NOT NULL,
    entry_seq bigint NOT NULL,
    settle_fp bytea
);


--
-- Name: credit_lots; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.credit_lots (
    id text NOT NULL COLLATE pg_catalog."C",
    account_id text NOT NULL COLLATE pg_catalog."C",
    expires_at bigint NOT NULL,
    remaining numeric NOT NULL
);


--
-- Name: credit_ops; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.credit_ops (
    key text NOT NULL COLLATE pg_catalog."C",
    account_id text NOT NULL COLLATE pg_catalog."C",
    kind smallint NOT NULL,
    fingerprint bytea NOT NULL,
    entry_seq bigint NOT NULL,
    hold_id text NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at bigint NOT NULL
);


--
-- Name: sessions; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.sessions (
    token_hash bytea NOT NULL,
    account_id text NOT NULL COLLATE pg_catalog."C",
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint
);


--
-- Name: usage_ops; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.usage_ops (
    key text NOT NULL COLLATE pg_catalog."C",
    account_id text NOT NULL COLLATE pg_catalog."C",
    fingerprint bytea NOT NULL,
    record_id text NOT NULL,
    hold_id text NOT NULL,
    created_at bigint NOT NULL
);


--
-- Name: usage_records; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.usage_records (
    account_id text NOT NULL COLLATE pg_catalog."C",
    created_at bigint NOT NULL,
    id text NOT NULL COLLATE pg_catalog."C",
    key_id text NOT NULL,
    auth_source text NOT NULL,
    endpoint text NOT NULL,
    method text NOT NULL,
    model text NOT NULL,
    status_code integer NOT NULL,
    response_time bigint NOT NULL,
    request_bytes bigint NOT NULL,
    response_bytes bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    units bigint NOT NULL,
    cached_units bigint NOT NULL,
    upstream_cost numeric NOT NULL,
    cost numeric NOT NULL,
    error_type text NOT NULL,
    error_message text NOT NULL,
    metadata text,
    cached_prompt_tokens bigint DEFAULT 0 NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    reasoning_tokens bigint DEFAULT 0 NOT NULL,
    price_from bigint
);


--
-- Name: usage_rollups; Type: TABLE; Schema: klfixture_v0008; Owner: -
--

CREATE TABLE klfixture_v0008.usage_rollups (
    account_id text NOT NULL COLLATE pg_catalog."C",
    tz text NOT NULL COLLATE pg_catalog."C",
    day text NOT NULL COLLATE pg_catalog."C",
    model text NOT NULL COLLATE pg_catalog."C",
    key_id text NOT NULL COLLATE pg_catalog."C",
    endpoint text NOT NULL COLLATE pg_catalog."C",
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    units bigint NOT NULL,
    cached_units bigint NOT NULL,
    cost numeric NOT NULL,
    cached_prompt_tokens bigint DEFAULT 0 NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    reasoning_tokens bigint DEFAULT 0 NOT NULL
)
WITH (fillfactor='70');


--
-- Data for Name: account_tokens; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--



--
-- Data for Name: accounts; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.accounts VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 'Asha', 'asha@example.com', 'free', NULL, 'active', 'Asia/Kolkata', NULL, '$argon2id$v=19$m=64,t=1,p=1$FRfbxtbbqktNInE0cnHd/g$38z40nz7/vXKkgklTMsEnNC3Y/ykhgeHpwIaBQb+0qE', 1793611800000000000, 1793611800000000000);
INSERT INTO klfixture_v0008.accounts VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 'Ravi', 'ravi@example.com', 'pro', NULL, 'active', 'UTC', NULL, '', 1793611860000000000, 1793611860000000000);
INSERT INTO klfixture_v0008.accounts VALUES ('acct_01m6dsj210e00r79tfs0fyk17w', 'Closed account', 'closed-acct_01m6dsj210e00r79tfs0fyk17w@closed.invalid', 'starter', NULL, 'closed', 'UTC', NULL, '', 1793611860000000000, 1793611860000000000);


--
-- Data for Name: api_keys; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.api_keys VALUES ('key_01m6dsg7e0e01awa9v0je4y11h', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 'rotated', 'live', 'live', 'kl_live_', 'kl_live_URnL', '\x902e3aac251a791425e4df0f7fb7333a61cc3c69c0fdf7a768f0ea88b99d30a5', '\xa717273705281472807fe3f19a04bae2aed7d8322c9e7c21e512da1b89db5324', 1793615460000000000, NULL, NULL, 'active', NULL, 1793611800000000000, 1793611860000000000, 1793611860000000000, NULL, NULL);
INSERT INTO klfixture_v0008.api_keys VALUES ('key_01m6dsj210e00t6r77kbqf83xp', 'acct_01m6dsj210e00r79tfs0fyk17w', 'gone', 'live', 'live', 'kl_live_', 'kl_live_WeCw', '\xb97187153990b2d91353997a4db97783bb0c762bf003b739b0598003a5363e71', NULL, NULL, NULL, NULL, 'revoked', NULL, 1793611860000000000, 1793611860000000000, NULL, NULL, NULL);
INSERT INTO klfixture_v0008.api_keys VALUES ('key_01m6dsg7e0e0093dm4rnh70wmt', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 'prod', 'live', 'live', 'kl_live_', 'kl_live_qKkf', '\x3940f1b15e683254743bb7df1982234bfae4bb8221787efbde6c4c98511c0cc5', NULL, NULL, NULL, NULL, 'active', NULL, 1793611800000000000, 1793611800000000000, NULL, 1793611860000000000, NULL);
INSERT INTO klfixture_v0008.api_keys VALUES ('key_01m6dsg7e0e00twnrne9wmvcfq', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 'old', 'live', 'live', 'kl_live_', 'kl_live_bdx8', '\x673f357e8256bf6c2d5902bc8b9b092925e85af217f104506f20334d5248d96f', NULL, NULL, NULL, NULL, 'revoked', NULL, 1793611800000000000, 1793611860000000000, NULL, 1793611860000000000, NULL);
INSERT INTO klfixture_v0008.api_keys VALUES ('key_01m6dsj210e00arz138y7rrcz0', 'acct_01m6dsj210e009ahv97jbw2ne3', 'batch', 'live', 'live', 'kl_live_', 'kl_live_B4oi', '\x7ba44a4fa45023370a95bd239fec3a304d8683a3191c13a2c7339652e6eb770e', NULL, NULL, NULL, NULL, 'active', NULL, 1793611860000000000, 1793611860000000000, NULL, 1793611860000000000, NULL);


--
-- Data for Name: closed_emails; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.closed_emails VALUES ('\xa6c5515c513c25a36cfed7f50b18dce9e95b11673c5869c29cf2610b4ab8cd8b', 1793611860000000000);


--
-- Data for Name: credit_accounts; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.credit_accounts VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 'INR', 514, 10, 5, 13, 0, 0, 'UTC', false, 0, 0, true, 0, 1793491200000000000, 1796083200000000000, 6, 1, 1793615460000000000, 1793611860000000000, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_accounts VALUES ('acct_01m6dsj210e00r79tfs0fyk17w', 'INR', 0, 0, 0, 1, 0, 0, 'UTC', false, 0, 0, true, 0, 1793491200000000000, 1796083200000000000, 0, 0, 0, 1793611860000000000, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_accounts VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 'INR', 43.55, 4.05, 6, 20, 0, 0, 'Asia/Kolkata', false, 0, 0, true, 0, 1793471400000000000, 1796063400000000000, 6.45, 0, 1793615460000000000, 1793611800000000000, 1793611860000000000);


--
-- Data for Name: credit_entries; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1, 'txn_01m6dsg7e0e00b82acghh9ghat', 'grant', 50, 50, 'signup', 'Free plan signup grant', 'signup-grant', '', NULL, 1793611800000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 2, 'txn_01m6dsj210e00tmc8shfskcs99', 'debit', -1.25, 48.75, 'log_01m6dsj210e00arwdh72c4fz90', 'fixture-model', '', 'hold_01m6dsj210e00b5tdj2nsk1j48', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, 'txn_01m6dsj210e01rr8rbgybwvzkf', 'debit', -1.27, 47.48, 'log_01m6dsj210e00raj5sq2x08ce6', 'fixture-model', '', 'hold_01m6dsj210e01b1vnfkc7ftn02', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 4, 'txn_01m6dsj210e02vsq7tv7s7xwp0', 'debit', -1.29, 46.19, 'log_01m6dsj210e0184egn8z8hzs0y', 'fixture-model', '', 'hold_01m6dsj210e02ae35m2xaazn0f', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 5, 'txn_01m6dsj210e03t8g04rgxjgfmf', 'debit', -1.31, 44.88, 'log_01m6dsj210e01tawee0nxd7b1d', 'fixture-model', '', 'hold_01m6dsj210e03aa2k3p0n2qkz7', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 6, 'txn_01m6dsj210e04tzjzfczvb65g5', 'debit', -1.33, 43.55, 'log_01m6dsj210e02bqs6asvejz1qd', 'fixture-model', '', 'hold_01m6dsj210e04babteqg8a51sa', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 1, 'txn_01m6dsj210e068k9cnrkr79va2', 'purchase', 500, 500, 'pay_1', '', 'pay_1', '', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 2, 'txn_01m6dsj210e06v4t016mnnmc66', 'grant', 20, 520, 'promo', '', 'promo_1', '', 1825147800000000000, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 3, 'txn_01m6dsj210e07trpq2pndj6wav', 'debit', -2, 518, 'log_01m6dsj210e038yfxc8jtmg0xa', '/v1/op', '', 'hold_01m6dsj210e079561jh95pbjkh', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 4, 'txn_01m6dsj210e08t6rnrde4ts387', 'debit', -2, 516, 'log_01m6dsj210e03r61edr4hs8hpa', '/v1/op', '', 'hold_01m6dsj210e08980jp0qgtz2k2', NULL, 1793611860000000000);
INSERT INTO klfixture_v0008.credit_entries VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 5, 'txn_01m6dsj210e09v1e095xqy6b2p', 'debit', -2, 514, 'log_01m6dsj210e0496zc2sg5fp0bs', '/v1/op', '', 'hold_01m6dsj210e09akbnmd95y7mt9', NULL, 1793611860000000000);


--
-- Data for Name: credit_holds; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e00b5tdj2nsk1j48', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 2.55, 'settled', 'req_01m6dsj210e00a3wjdd319szh1', 'hold:req_01m6dsj210e00a3wjdd319szh1', 1793611860000000000, 1793615460000000000, 1793611860000000000, 1.25, 1.25, 'txn_01m6dsj210e00tmc8shfskcs99', 2, '\xd9d9dc08c13e46b663dae8b08c7e72ce8ed1e35284a43996e4f57f4aa0ac2d89');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e01b1vnfkc7ftn02', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 2.55, 'settled', 'req_01m6dsj210e00vbvv3pvpt7pc0', 'hold:req_01m6dsj210e00vbvv3pvpt7pc0', 1793611860000000000, 1793615460000000000, 1793611860000000000, 1.27, 1.27, 'txn_01m6dsj210e01rr8rbgybwvzkf', 3, '\x3d76fa2253885321f7e893f7f0742c1233ec122bdbd0bc266b48abec2056a736');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e02ae35m2xaazn0f', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 2.55, 'settled', 'req_01m6dsj210e0186z5rc67xe55t', 'hold:req_01m6dsj210e0186z5rc67xe55t', 1793611860000000000, 1793615460000000000, 1793611860000000000, 1.29, 1.29, 'txn_01m6dsj210e02vsq7tv7s7xwp0', 4, '\xbe24924aa9b6983fb903febd262f32e90f11431b110948c285b8688c6f3437d2');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e03aa2k3p0n2qkz7', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 2.55, 'settled', 'req_01m6dsj210e01vfz6drsrv24by', 'hold:req_01m6dsj210e01vfz6drsrv24by', 1793611860000000000, 1793615460000000000, 1793611860000000000, 1.31, 1.31, 'txn_01m6dsj210e03t8g04rgxjgfmf', 5, '\x4e249efff94c63ea434436599ae4ecf5c405f754910a50142e21c9accff3e60e');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e04babteqg8a51sa', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 2.55, 'settled', 'req_01m6dsj210e029abxz1c69k08z', 'hold:req_01m6dsj210e029abxz1c69k08z', 1793611860000000000, 1793615460000000000, 1793611860000000000, 1.33, 1.33, 'txn_01m6dsj210e04tzjzfczvb65g5', 6, '\x4fbe072aee3bb402603b441ed5b7db4ac0e2a74c1e29e5f2012b394221c05884');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e05ae0zkjkry00ac', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 0.45, 'released', 'req_01m6dsj210e02rt7rxteqh8sqt', 'hold:req_01m6dsj210e02rt7rxteqh8sqt', 1793611860000000000, 1793615460000000000, 1793611860000000000, 0, 0, '', 0, '\x0000000000000000000000000000000000000000000000000000000000000000');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e05s5ved474rr4ax', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 4.05, 'active', 'req_fixture_open', 'hold:req_fixture_open', 1793611860000000000, 1793615460000000000, NULL, 0, 0, '', 0, '\x0000000000000000000000000000000000000000000000000000000000000000');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e079561jh95pbjkh', 'acct_01m6dsj210e009ahv97jbw2ne3', 2, 'settled', 'req_01m6dsj210e03bkn64cynxay8a', 'hold:req_01m6dsj210e03bkn64cynxay8a', 1793611860000000000, 1793615460000000000, 1793611860000000000, 2, 2, 'txn_01m6dsj210e07trpq2pndj6wav', 3, '\xb352266f68a383efd7e40b6fa79724627b7d46536bd6638a0a43244a97b2577a');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e08980jp0qgtz2k2', 'acct_01m6dsj210e009ahv97jbw2ne3', 2, 'settled', 'req_01m6dsj210e03tr8nz2zzvkwsg', 'hold:req_01m6dsj210e03tr8nz2zzvkwsg', 1793611860000000000, 1793615460000000000, 1793611860000000000, 2, 2, 'txn_01m6dsj210e08t6rnrde4ts387', 4, '\xd75030aab909efa65e78ab86314197a556135113e154f351b64c70ca46344449');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e09akbnmd95y7mt9', 'acct_01m6dsj210e009ahv97jbw2ne3', 2, 'settled', 'req_01m6dsj210e048ks0em34hwgnw', 'hold:req_01m6dsj210e048ks0em34hwgnw', 1793611860000000000, 1793615460000000000, 1793611860000000000, 2, 2, 'txn_01m6dsj210e09v1e095xqy6b2p', 5, '\x7ecfc46eab44b417bdaf0134445dc17e7a799f684d3ce18795db45de49b39cff');
INSERT INTO klfixture_v0008.credit_holds VALUES ('hold_01m6dsj210e0ab8vh2b1seete4', 'acct_01m6dsj210e009ahv97jbw2ne3', 10, 'active', 'manual', 'manual_hold', 1793611860000000000, 1793615460000000000, NULL, 0, 0, '', 0, '\x0000000000000000000000000000000000000000000000000000000000000000');


--
-- Data for Name: credit_lots; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.credit_lots VALUES ('txn_01m6dsj210e06v4t016mnnmc66', 'acct_01m6dsj210e009ahv97jbw2ne3', 1825147800000000000, 14);


--
-- Data for Name: credit_ops; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.credit_ops VALUES ('signup-grant', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 1, '\xaa0291539d353b05e44a4625a7346eb1d80650e89d7af54fadd5845dfc10b17d', 1, '');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e00a3wjdd319szh1', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\xa7d429a27f5354c00cedd90559f48932c5d557f853c4944e0273876dc8ed2740', 0, 'hold_01m6dsj210e00b5tdj2nsk1j48');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e00vbvv3pvpt7pc0', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\xbdb4193d2566d2d800f9999629b744c74f7f18850c23f3d9eadd474e409a54e8', 0, 'hold_01m6dsj210e01b1vnfkc7ftn02');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e0186z5rc67xe55t', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\xf786fb3f4d4229402ac7a01b1c6db2a35e9a92bbdb1999070f31f5d3da71e1b8', 0, 'hold_01m6dsj210e02ae35m2xaazn0f');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e01vfz6drsrv24by', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\x91f2b4e849dab1e2a095c5f97b7d97bb71128c95e609f5a4a698952166e1e7da', 0, 'hold_01m6dsj210e03aa2k3p0n2qkz7');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e029abxz1c69k08z', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\xa897ba138af2adc12d5427749447409b88830a9ec439c63c67c5d96c234821f9', 0, 'hold_01m6dsj210e04babteqg8a51sa');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e02rt7rxteqh8sqt', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\x0eebcbd97a2c544a38365a12b91450a2bd5535a1d5d04336bdde2da827c8574e', 0, 'hold_01m6dsj210e05ae0zkjkry00ac');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_fixture_open', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 3, '\xa76437fdc8436a806910edc24001da14347f5fa53b7f49438a38a7792229bb13', 0, 'hold_01m6dsj210e05s5ved474rr4ax');
INSERT INTO klfixture_v0008.credit_ops VALUES ('pay_1', 'acct_01m6dsj210e009ahv97jbw2ne3', 1, '\x5e7033c6e5fb48021b20b02b49e6568cc992682212a1b0f49f87aebbe054716b', 1, '');
INSERT INTO klfixture_v0008.credit_ops VALUES ('promo_1', 'acct_01m6dsj210e009ahv97jbw2ne3', 1, '\x94aa2817d2bcac19ca7a24d9595914c0c54e1d476b7fb5064c8d0a48ab2b2bb9', 2, '');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e03bkn64cynxay8a', 'acct_01m6dsj210e009ahv97jbw2ne3', 3, '\x48ccf7b299e43751fd0e4788ee14b81c3b6f48dc43359d9bd36c531a6366a82c', 0, 'hold_01m6dsj210e079561jh95pbjkh');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e03tr8nz2zzvkwsg', 'acct_01m6dsj210e009ahv97jbw2ne3', 3, '\x4c0c53d4284eed0718c5b541db24aaff9e65a12114cd188468a3d013d9291282', 0, 'hold_01m6dsj210e08980jp0qgtz2k2');
INSERT INTO klfixture_v0008.credit_ops VALUES ('hold:req_01m6dsj210e048ks0em34hwgnw', 'acct_01m6dsj210e009ahv97jbw2ne3', 3, '\x33cc2ea28b3ed285526e90ab4514e2241624ba25729e48911c78ff00fb318c60', 0, 'hold_01m6dsj210e09akbnmd95y7mt9');
INSERT INTO klfixture_v0008.credit_ops VALUES ('manual_hold', 'acct_01m6dsj210e009ahv97jbw2ne3', 3, '\x763db634ee4c049e042d0bf7af50f4f2f9e1e4667fdf34b143567d8168b1eff1', 0, 'hold_01m6dsj210e0ab8vh2b1seete4');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.schema_migrations VALUES (1, '0001_accounts.sql', 1796651528943763911);
INSERT INTO klfixture_v0008.schema_migrations VALUES (2, '0002_apikeys.sql', 1796651528967354829);
INSERT INTO klfixture_v0008.schema_migrations VALUES (3, '0003_credits.sql', 1796651529037136026);
INSERT INTO klfixture_v0008.schema_migrations VALUES (4, '0004_usage.sql', 1796651529063149208);
INSERT INTO klfixture_v0008.schema_migrations VALUES (5, '0005_usage_record_id.sql', 1796651529067529809);
INSERT INTO klfixture_v0008.schema_migrations VALUES (6, '0006_lifecycle.sql', 1796651529094917263);
INSERT INTO klfixture_v0008.schema_migrations VALUES (7, '0007_reserved.sql', 1796651529104384260);
INSERT INTO klfixture_v0008.schema_migrations VALUES (8, '0008_token_parts.sql', 1796651529112723452);


--
-- Data for Name: sessions; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.sessions VALUES ('\x85b5296f5d8b55650208dc5fc6e2b327d5087a31295ca47bb818c57d52fa9c9b', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 1793698260000000000, NULL);


--
-- Data for Name: usage_ops; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e00a3wjdd319szh1', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', '\xf4476365ee19fadc74df9e28a4a71d9a726f8e71fba2cc88222973ef939e314e', 'log_01m6dsj210e00arwdh72c4fz90', 'hold_01m6dsj210e00b5tdj2nsk1j48', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e00vbvv3pvpt7pc0', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', '\x32a6a1973d9a0ae40c20e458b87b0d8a6f4383413bfa00c57cddfc979b4e2179', 'log_01m6dsj210e00raj5sq2x08ce6', 'hold_01m6dsj210e01b1vnfkc7ftn02', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e0186z5rc67xe55t', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', '\x750296ac10e7650f1573d7e978c5faba0c9e2a5cd380f92679ab81c5bf45c205', 'log_01m6dsj210e0184egn8z8hzs0y', 'hold_01m6dsj210e02ae35m2xaazn0f', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e01vfz6drsrv24by', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', '\x82d4372903d57e6ee04ca884be9f058ce61b6f70f848ccd4f4848274ff5eaddf', 'log_01m6dsj210e01tawee0nxd7b1d', 'hold_01m6dsj210e03aa2k3p0n2qkz7', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e029abxz1c69k08z', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', '\x8667fca7f24e985f4105b0560e86dfc2764b5827ffa853e4a93d7e99de662040', 'log_01m6dsj210e02bqs6asvejz1qd', 'hold_01m6dsj210e04babteqg8a51sa', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e02rt7rxteqh8sqt', 'acct_01m6dsg7e0e00b70k6mnhdfy2s', '\x14902943abc6fd0efb4988020a79dc6d8fbdfba5805c90d7a65e423a1329a787', 'log_01m6dsj210e02tsgy3qm8wrg3a', 'hold_01m6dsj210e05ae0zkjkry00ac', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e03bkn64cynxay8a', 'acct_01m6dsj210e009ahv97jbw2ne3', '\x0d5cad2612d543d9ef62536ae89aeb9e4fd628c23a38c3d895d9209f53b2c52c', 'log_01m6dsj210e038yfxc8jtmg0xa', 'hold_01m6dsj210e079561jh95pbjkh', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e03tr8nz2zzvkwsg', 'acct_01m6dsj210e009ahv97jbw2ne3', '\x1498ba7f387d3da5328856c0d62f334233e9a747d31f0c944c94f8cbc74ad162', 'log_01m6dsj210e03r61edr4hs8hpa', 'hold_01m6dsj210e08980jp0qgtz2k2', 1793611860000000000);
INSERT INTO klfixture_v0008.usage_ops VALUES ('req_01m6dsj210e048ks0em34hwgnw', 'acct_01m6dsj210e009ahv97jbw2ne3', '\x7d4f35e77982ebc157df55eab725727dced85fa5ea669a2c3b8cbee30fda54a0', 'log_01m6dsj210e0496zc2sg5fp0bs', 'hold_01m6dsj210e09akbnmd95y7mt9', 1793611860000000000);


--
-- Data for Name: usage_records; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 'log_01m6dsj210e00arwdh72c4fz90', 'key_01m6dsg7e0e0093dm4rnh70wmt', 'api_key', '', '', 'fixture-model', 200, 0, 0, 0, 100, 20, 0, 0, 0, 1.25, '', '', NULL, 40, 0, 10, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 'log_01m6dsj210e00raj5sq2x08ce6', 'key_01m6dsg7e0e0093dm4rnh70wmt', 'api_key', '', '', 'fixture-model', 200, 0, 0, 0, 100, 21, 0, 0, 0, 1.27, '', '', NULL, 40, 0, 10, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 'log_01m6dsj210e0184egn8z8hzs0y', 'key_01m6dsg7e0e0093dm4rnh70wmt', 'api_key', '', '', 'fixture-model', 200, 0, 0, 0, 100, 22, 0, 0, 0, 1.29, '', '', NULL, 40, 0, 10, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 'log_01m6dsj210e01tawee0nxd7b1d', 'key_01m6dsg7e0e0093dm4rnh70wmt', 'api_key', '', '', 'fixture-model', 200, 0, 0, 0, 100, 23, 0, 0, 0, 1.31, '', '', NULL, 40, 0, 10, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 'log_01m6dsj210e02bqs6asvejz1qd', 'key_01m6dsg7e0e0093dm4rnh70wmt', 'api_key', '', '', 'fixture-model', 200, 0, 0, 0, 100, 24, 0, 0, 0, 1.33, '', '', NULL, 40, 0, 10, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 1793611860000000000, 'log_01m6dsj210e02tsgy3qm8wrg3a', 'key_01m6dsg7e0e00twnrne9wmvcfq', 'api_key', '', '', 'fixture-model', 502, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'upstream_error', 'bad gateway', NULL, 0, 0, 0, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 1793611860000000000, 'log_01m6dsj210e038yfxc8jtmg0xa', 'key_01m6dsj210e00arz138y7rrcz0', 'api_key', '/v1/op', 'POST', '', 200, 0, 0, 0, 0, 0, 2, 0, 0, 2, '', '', NULL, 0, 0, 0, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 1793611860000000000, 'log_01m6dsj210e03r61edr4hs8hpa', 'key_01m6dsj210e00arz138y7rrcz0', 'api_key', '/v1/op', 'POST', '', 200, 0, 0, 0, 0, 0, 2, 0, 0, 2, '', '', NULL, 0, 0, 0, NULL);
INSERT INTO klfixture_v0008.usage_records VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 1793611860000000000, 'log_01m6dsj210e0496zc2sg5fp0bs', 'key_01m6dsj210e00arz138y7rrcz0', 'api_key', '/v1/op', 'POST', '', 200, 0, 0, 0, 0, 0, 2, 0, 0, 2, '', '', NULL, 0, 0, 0, NULL);


--
-- Data for Name: usage_rollups; Type: TABLE DATA; Schema: klfixture_v0008; Owner: -
--

INSERT INTO klfixture_v0008.usage_rollups VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 'Asia/Kolkata', '2026-11-02', 'fixture-model', 'key_01m6dsg7e0e0093dm4rnh70wmt', '', 5, 0, 500, 110, 0, 0, 6.45, 200, 0, 50);
INSERT INTO klfixture_v0008.usage_rollups VALUES ('acct_01m6dsg7e0e00b70k6mnhdfy2s', 'Asia/Kolkata', '2026-11-02', 'fixture-model', 'key_01m6dsg7e0e00twnrne9wmvcfq', '', 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO klfixture_v0008.usage_rollups VALUES ('acct_01m6dsj210e009ahv97jbw2ne3', 'UTC', '2026-11-02', '', 'key_01m6dsj210e00arz138y7rrcz0', '/v1/op', 3, 0, 0, 0, 6, 0, 6, 0, 0, 0);


--
-- Name: account_tokens account_tokens_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.account_tokens
    ADD CONSTRAINT account_tokens_pkey PRIMARY KEY (token_hash);


--
-- Name: accounts accounts_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.accounts
    ADD CONSTRAINT accounts_pkey PRIMARY KEY (id);


--
-- Name: api_keys api_keys_hash_key; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.api_keys
    ADD CONSTRAINT api_keys_hash_key UNIQUE (hash);


--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);


--
-- Name: api_keys api_keys_prev_hash_key; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.api_keys
    ADD CONSTRAINT api_keys_prev_hash_key UNIQUE (prev_hash);


--
-- Name: closed_emails closed_emails_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.closed_emails
    ADD CONSTRAINT closed_emails_pkey PRIMARY KEY (email_hash);


--
-- Name: credit_accounts credit_accounts_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.credit_accounts
    ADD CONSTRAINT credit_accounts_pkey PRIMARY KEY (account_id);


--
-- Name: credit_entries credit_entries_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.credit_entries
    ADD CONSTRAINT credit_entries_pkey PRIMARY KEY (account_id, seq);


--
-- Name: credit_holds credit_holds_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.credit_holds
    ADD CONSTRAINT credit_holds_pkey PRIMARY KEY (id);


--
-- Name: credit_lots credit_lots_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.credit_lots
    ADD CONSTRAINT credit_lots_pkey PRIMARY KEY (id);


--
-- Name: credit_ops credit_ops_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.credit_ops
    ADD CONSTRAINT credit_ops_pkey PRIMARY KEY (key, account_id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (token_hash);


--
-- Name: usage_ops usage_ops_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.usage_ops
    ADD CONSTRAINT usage_ops_pkey PRIMARY KEY (key, account_id);


--
-- Name: usage_records usage_records_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.usage_records
    ADD CONSTRAINT usage_records_pkey PRIMARY KEY (account_id, created_at, id);


--
-- Name: usage_rollups usage_rollups_pkey; Type: CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.usage_rollups
    ADD CONSTRAINT usage_rollups_pkey PRIMARY KEY (account_id, tz, day, model, key_id, endpoint);


--
-- Name: account_tokens_account; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX account_tokens_account ON klfixture_v0008.account_tokens USING btree (account_id);


--
-- Name: accounts_email; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE UNIQUE INDEX accounts_email ON klfixture_v0008.accounts USING btree (lower(email));


--
-- Name: api_keys_account; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX api_keys_account ON klfixture_v0008.api_keys USING btree (account_id, id);


--
-- Name: credit_holds_active; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX credit_holds_active ON klfixture_v0008.credit_holds USING btree (expires_at) WHERE (state = 'active'::text);


--
-- Name: credit_holds_due; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX credit_holds_due ON klfixture_v0008.credit_holds USING btree (account_id, expires_at) WHERE (state = 'active'::text);


--
-- Name: credit_lots_account; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX credit_lots_account ON klfixture_v0008.credit_lots USING btree (account_id, expires_at, id);


--
-- Name: credit_lots_expires; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX credit_lots_expires ON klfixture_v0008.credit_lots USING btree (expires_at);


--
-- Name: sessions_account; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX sessions_account ON klfixture_v0008.sessions USING btree (account_id);


--
-- Name: sessions_expires; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE INDEX sessions_expires ON klfixture_v0008.sessions USING btree (expires_at);


--
-- Name: usage_records_id; Type: INDEX; Schema: klfixture_v0008; Owner: -
--

CREATE UNIQUE INDEX usage_records_id ON klfixture_v0008.usage_records USING btree (account_id, id);


--
-- Name: credit_entries credit_entries_no_change; Type: TRIGGER; Schema: klfixture_v0008; Owner: -
--

CREATE TRIGGER credit_entries_no_change BEFORE DELETE OR UPDATE ON klfixture_v0008.credit_entries FOR EACH ROW EXECUTE FUNCTION klfixture_v0008.credit_entries_append_only();


--
-- Name: account_tokens account_tokens_account_id_fkey; Type: FK CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.account_tokens
    ADD CONSTRAINT account_tokens_account_id_fkey FOREIGN KEY (account_id) REFERENCES klfixture_v0008.accounts(id);


--
-- Name: api_keys api_keys_account_id_fkey; Type: FK CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.api_keys
    ADD CONSTRAINT api_keys_account_id_fkey FOREIGN KEY (account_id) REFERENCES klfixture_v0008.accounts(id);


--
-- Name: sessions sessions_account_id_fkey; Type: FK CONSTRAINT; Schema: klfixture_v0008; Owner: -
--

ALTER TABLE ONLY klfixture_v0008.sessions
    ADD CONSTRAINT sessions_account_id_fkey FOREIGN KEY (account_id) REFERENCES klfixture_v0008.accounts(id);


--
-- PostgreSQL database dump complete
--

\unrestrict 9v6PobavYzNEqDeRNgDNG7LcrTeIRT03XA79qhimrxU95bpK7NFzPblyTpiv4gQ

