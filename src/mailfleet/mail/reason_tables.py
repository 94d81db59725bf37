"""The data :mod:`.reasons` classifies with: receivers' phrases and the code tables.

Each table is read in order; see :func:`~.reasons.classify_failure` for how
they combine. Phrases are matched in lower case, on the receiver's words with
addresses and host names masked.
"""

from __future__ import annotations

from .reports import BounceReason

__all__ = ["REPLY_REASONS", "STATUS_REASONS", "TEXT_PATTERNS", "WEAK_PATTERNS"]

R = BounceReason

TEXT_PATTERNS: tuple[tuple[BounceReason, str, bool, str | None], ...] = (
    # (reason, pattern, only for a temporary 4.7.x / 421 answer, words one of which any
    #  match contains, space-separated: the pattern is skipped when the text has none;
    #  None: always tried)
    (
        R.VIRUS,
        r"\bvirus(?:es)?\b|malware|trojan|\binfected\b|ransomware"
        r"|malicious\s+(?:content|attachment|file|code|software|payload|link)",
        False,
        "virus malware trojan infected ransomware malicious",
    ),
    (
        R.RELAY_DENIED,
        r"relay(?:ing)?\s+(?:access\s+)?(?:is\s+)?(?:denied|not\s+(?:permitted|allowed|"
        r"authori[sz]ed)|prohibited|refused|rejected|disallowed)|not\s+(?:permitted|allowed|"
        r"authori[sz]ed)\s+to\s+relay|(?:unable|cannot|can't|will\s+not|won't|do(?:es)?\s+not)\s+"
        r"relay\b|no\s+relaying|in\s+my\s+list\s+of\s+allowed\s+rcpthosts|we\s+do\s+not\s+relay",
        False,
        "relay rcpthosts",
    ),
    (
        R.AUTH_FAILURE,
        r"\bspf\b|\bdkim\b|\bdmarc\b|sender\s+policy\s+framework|unauthenticated"
        r"|not\s+authenticated|authentication\s+(?:is\s+)?(?:required|failed|failure|check)"
        r"|\bptr\b|reverse\s+(?:dns|lookup|hostname|mapping)|\brdns\b"
        r"|cannot\s+find\s+your\s+(?:reverse\s+)?hostname|(?:helo|ehlo)\s+(?:command\s+)?rejected"
        r"|(?:starttls|tls)\s+(?:is\s+)?(?:required|mandatory)|must\s+(?:use|issue)\s+(?:a\s+)?starttls"
        r"|requires?\s+(?:a\s+)?(?:secure|encrypted|tls)\s+connection|encryption\s+(?:is\s+)?required",
        False,
        "spf dkim dmarc sender authenticat ptr reverse rdns hostname helo ehlo tls encrypt secure",
    ),
    # The sender's side (our address or domain), before any recipient wording.
    (
        R.POLICY,
        r"sender\s+address\s+rejected|sender\s+(?:domain|address)\s+(?:\S+\s+){0,3}?"
        r"(?:not\s+found|does\s*n[o']?t\s+exist|unknown|invalid|must\s+(?:exist|resolve))"
        r"|sender\s+verif\w*\s+failed|(?:mail\s+from|envelope\s+sender)\s+(?:\S+\s+){0,3}?rejected"
        r"|unroutable\s+sender|invalid\s+sender",
        False,
        "sender from",
    ),
    (
        R.BLOCKED,
        r"blocked\s+using|block\s*-?list|black\s*-?list|deny\s*-?list|\bdnsbl\b|\brbls?\b"
        r"|spamhaus|spamcop|barracudacentral|\bsorbs\b|uceprotect|\bsurbl\b|\buribl\b"
        r"|(?:bad|low|poor)\s+(?:\S+\s+)?reputation|reputation\s+(?:of|is|too)"
        r"|\bip\b[^.;\n]{0,60}?\b(?:listed|blocked|banned|blacklisted|not\s+allowed)"
        r"|banned\s+sending\s+ip|(?:your|sending|client|the)\s+(?:ip|server|network|mta)\b[^.;\n]{0,40}?"
        r"\b(?:blocked|banned|blacklisted|refused|listed)|refused\s+to\s+talk\s+to\s+me"
        r"|not\s+(?:currently\s+)?accept(?:ing)?\s+mail\s+from\s+(?:your|this)\s+(?:ip|server|host|network)"
        r"|client\s+host\s+(?:\S+\s+){0,2}?(?:rejected|blocked)|dynamic\s+ips?\b|residential\s+ip"
        r"|messages\s+from\s+\[?\d{1,3}(?:\.\d{1,3}){3}\]?\s+(?:\S+\s+){0,3}?deferred",
        False,
        "block black deny dnsbl rbl spamhaus spamcop barracuda sorbs uceprotect surbl uribl"
        " reputation listed banned allowed refused accept client dynamic residential deferred",
    ),
    (
        R.SPAM,
        r"\bspam(?:my)?\b|\bube\b|unsolicited|\bbulk\s+(?:e-?mail|mail|message)|junk\s*(?:e-?)?mail"
        r"|high\s+(?:spam\s+)?score|phish",
        False,
        "spam ube unsolicited bulk junk score phish",
    ),
    # Gmail's over-quota answer also says "inactive": the storage words come first.
    (R.MAILBOX_FULL, r"out\s+of\s+storage\s+space", False, "storage"),
    (
        R.MAILBOX_DISABLED,
        r"(?:account|mail\s*box|user|address|recipient)\b[^.;\n]{0,40}?\b(?:is\s+|has\s+"
        r"been\s+|was\s+)?(?:disabled|deactivated|inactive|suspended|locked|frozen|on\s+hold|not\s+active|"
        r"expired)|inactive\s+(?:user|account|mailbox|recipient)|(?:disabled|suspended|deactivated|"
        r"locked)\s+(?:account|mailbox|user|recipient)|account\s+(?:is\s+)?(?:temporarily\s+)?"
        r"unavailable|no\s+longer\s+active",
        False,
        "disabled deactivated inactive suspended locked frozen hold active expired unavailable",
    ),
    (
        R.HOST_UNKNOWN,
        r"host\s+or\s+domain\s+name\s+not\s+found|name\s+service\s+error|\bnxdomain\b"
        r"|null\s+mx|\bno\s+(?:valid\s+|usable\s+)?mx\b|mx\s+(?:record\s+)?(?:lookup\s+)?(?:failed|not\s+found)"
        r"|unrout(?:e)?able\s+(?:mail\s+)?(?:address|domain)|domain\s+(?:name\s+)?(?:\S+\s+){0,2}?(?:not\s+"
        r"found|does\s*n[o']?t\s+exist|unknown|not\s+(?:resolvable|valid)|could\s+not\s+be\s+(?:found|"
        r"resolved))|(?:unknown|invalid|non-?existent)\s+(?:mail\s+)?(?:domain|host(?:name)?)\b"
        r"|no\s+such\s+(?:domain|host)|host\s+(?:name\s+)?(?:not\s+found|unknown|lookup\s+failed)"
        r"|couldn'?t\s+find\s+any\s+host|all\s+relevant\s+mx\s+records\s+point\s+to\s+non-?existent"
        r"|domain\s+(?:\S+\s+){0,3}?does\s+not\s+(?:accept|receive)\s+(?:e-?)?mail|dominio\s+no\s+existe",
        False,
        "host domain service nxdomain mx unrout dominio",
    ),
    (
        R.USER_UNKNOWN,
        r"non-?existent\s+(?:user|recipient|mailbox|address|account)|(?:user|recipient|mailbox|address|account)\s+(?:is\s+)?non-?existent|"
        r"invalid\s+(?:\S+\s+){0,2}?(?:user(?:id)?|recipient|mailbox|addressee)|does\s+not\s+have\s+a\s+final\s+(?:e-?mail\s+)?delivery|recipient\s+name\s+is\s+not\s+recogni[sz]ed|"
        r"user(?:name)?\s+(?:\S+\s+){0,2}?unknown|unknown\s+(?:or\s+illegal\s+)?(?:user|"
        r"recipient|local[- ]?part|mailbox|address|e-?mail|alias|account|addressee)"
        r"|(?:recipient|address|mailbox|account|addressee)\s+(?:is\s+)?unknown"
        r"|no\s+such\s+(?:user|recipient|mailbox|address|account|person|local\s+user|e-?mail|addressee)"
        r"|(?:user|recipient|mailbox|account|address|addressee|e-?mail)\b[^.;\n]{0,80}?\b(?:does\s*n[o']?t|"
        r"doesn't|did\s+not)\s+exist|(?:user|recipient|mailbox|account|address|addressee|e-?mail)\b"
        r"[^.;\n]{0,40}?\b(?:not\s+(?:found|known|exist\w*|listed|recogni[sz]ed)|(?:couldn'?t|could\s+"
        r"not|can(?:no|')t)\s+be\s+found|(?:wasn'?t|was\s+not)\s+found)"
        r"|invalid\s+(?:recipient|user|mailbox|address|e-?mail|addressee|account|destination|rcpt)"
        r"|(?:recipient|user|mailbox|account)\s+(?:is\s+)?invalid|not\s+a\s+(?:valid|known)\s+(?:user|"
        r"recipient|mailbox|address|account|local)|recip(?:ient)?notfound|no\s+mailbox\s+here"
        r"|no\s+(?:\S+\s+)?mailbox\s+(?:by\s+that\s+name|found)|mailbox\s+not\s+(?:found|present)"
        r"|do(?:es)?\s*n[o']?t\s+have\s+an?\s+\S+\s+account|not\s+listed\s+in\s+(?:the\s+)?(?:public\s+)?"
        r"(?:name\s+(?:&|and)\s+address\s+book|domino\s+directory|directory)"
        r"|no\s+longer\s+(?:valid|exists?|in\s+use|accepts?\s+mail)|bad\s+(?:destination\s+)?(?:mailbox|"
        r"recipient)|badrcptto|(?:account|mailbox|user)\s+(?:has\s+been\s+)?(?:deleted|removed|terminated)"
        r"|(?:benutzer|empf(?:ä|ae)nger|adresse|postfach)\s+(?:\S+\s+){0,2}?(?:unbekannt|existiert\s+nicht"
        r"|nicht\s+gefunden)|unbekannter?\s+(?:benutzer|empf)|(?:utilisateur|destinataire)\s+inconnu"
        r"|adresse\s+(?:e-?mail\s+)?(?:invalide|inconnue)|n'existe\s+pas|usuario\s+(?:desconocido|"
        r"inexistente|no\s+existe)|utente\s+(?:sconosciuto|inesistente)|indirizzo\s+(?:inesistente|non\s+"
        r"valido)|onbekende\s+(?:gebruiker|ontvanger)|bestaat\s+niet|usu[áa]rio\s+(?:desconhecido|"
        r"inexistente)|пользовател\w*\s+не\s+(?:найден|существует)|нет\s+такого|не\s+существует"
        r"|用户不存在|收件人不存在|用户名不存在|ユーザ\S{0,3}(?:存在しません|見つかりません)|宛先不明",
        False,
        None,
    ),
    (
        R.HAS_MOVED,
        r"has\s+moved|user\s+not\s+local|mailbox\s+(?:has\s+)?moved|address\s+(?:has\s+)?"
        r"changed|new\s+(?:e-?mail\s+)?address\s+is|no\s+longer\s+(?:employed|with\s+|works?\s+)",
        False,
        "moved local changed address longer",
    ),
    (
        R.RATE_LIMITED,
        r"rate[- ]?limit|(?:sending|receiving|message|mail|connection|delivery)\s+rate"
        r"|rate\s+(?:of\s+\S+\s+)?(?:exceeded|too\s+high)|(?:daily|hourly|sending|outbound)\s+(?:\S+\s+)"
        r"{0,2}?(?:quota|limit)\s+(?:\S+\s+){0,2}?(?:exceeded|reached)|exceeded\s+(?:the\s+|your\s+)?"
        r"(?:\S+\s+){0,2}?(?:rate|sending\s+limit|message\s+limit|daily\s+limit|connection\s+limit|hourly"
        r"\s+limit)|throttl|gr[ae]ylist|slow\s+down|unusual\s+(?:rate|volume|amount)"
        r"|(?:high|unexpected|excessive)\s+(?:\S+\s+)?volume|too\s+fast",
        False,
        "rate quota limit throttl greylist graylist slow unusual volume fast",
    ),
    (
        R.MAILBOX_FULL,
        r"(?:disk\s*space|storage)\s+quota|overdrawn|"
        r"over\s*(?:the\s+)?(?:\S+\s+)?quota|quota\s+(?:\S+\s+)?(?:exceeded|exceed|full|"
        r"reached|violation)|exceed\w*\s+(?:\S+\s+){0,3}?(?:quota|storage)|(?:mail\s*box|inbox|mail\s*"
        r"folder|postfach)\s+(?:\S+\s+){0,2}?(?:is\s+)?(?:full|over)\b|full\s+(?:mail\s*box|inbox)"
        r"|mailbox\s+size\s+(?:limit\s+)?exceeded|insufficient\s+(?:system\s+)?(?:storage|disk\s+space"
        r"|space)|not\s+enough\s+(?:\S+\s+)?space|no\s+space\s+left|out\s+of\s+(?:disk\s+)?space"
        r"|(?:disk|storage)\s+(?:quota|full|space\s+(?:exceeded|full))|too\s+many\s+messages\s+(?:in|on)"
        r"\s+(?:\S+\s+)?(?:mail\s*box|server|folder|inbox|account)|(?:postfach|mailbox)\s+(?:ist\s+)?voll"
        r"|speicherplatz|bo[iî]te\s+(?:\S+\s+){0,3}?pleine|buz[óo]n\s+(?:\S+\s+)?lleno"
        r"|casella\s+(?:\S+\s+)?piena|переполнен|容量",
        False,
        "quota overdrawn storage full over exceeded space messages voll speicherplatz pleine"
        " lleno piena переполнен 容量",
    ),
    (
        R.MESSAGE_TOO_BIG,
        r"(?:maximum|max)\s+(?:\S+\s+){0,2}?size|exceeded\s+the\s+maximum\s+(?:\S+\s+){0,2}?size|"
        r"(?:message|mail|e-?mail|attachment)s?\s+(?:\S+\s+)?(?:is\s+|was\s+)?too\s+"
        r"(?:large|big|long)|(?:message|mail)\s+(?:size|length)\s+(?:\S+\s+){0,2}?(?:exceed|limit|too)"
        r"|size\s+(?:limit|exceed)|exceeds?\s+(?:the\s+)?(?:\S+\s+){0,3}?(?:size|length)\s+(?:limit|"
        r"restriction)|(?:maximum|max)\s+(?:allowed\s+)?(?:message\s+)?size|too\s+large"
        r"|larger\s+than\s+(?:the\s+)?(?:\S+\s+)?(?:limit|maximum|allowed)",
        False,
        "size large big long length maximum",
    ),
    (
        R.RATE_LIMITED,
        r"too\s+many\s+(?:messages|mails?|e-?mails|connections|recipients|concurrent|"
        r"sessions|simultaneous|invalid|bad\s+commands|errors|requests)",
        False,
        "many",
    ),
    (
        R.RATE_LIMITED,
        r"try\s+(?:again\s+)?later|retry\s+later|come\s+back\s+later|deferred"
        r"|temporar(?:il)?y\s+(?:rejected|refused|blocked|unavailable)",
        True,
        "later deferred temporar",
    ),
    (
        R.EXPIRED,
        r"not\s+been\s+collected|failed\s+\d+\s+attempts|could\s+not\s+find\s+a\s+gateway|aborted\s+after\s+\d|"
        r"retry\s+time(?:out)?\s+(?:exceeded|not\s+reached\s+for\s+any\s+host\s+after\s+a\s+long)"
        r"|(?:delivery|message|queue)\s+(?:time\s+|lifetime\s+)?expired|expired\s+(?:after|in\s+(?:the\s+)?"
        r"queue|while)|could\s+not\s+be\s+delivered\s+(?:for|within|in)\s+(?:the\s+last\s+)?\d+(?:\.\d+)?\s*"
        r"(?:days?|hours?)|(?:in|on)\s+the\s+queue\s+too\s+long|queue\s+(?:for\s+)?too\s+long"
        r"|too\s+long\s+in\s+(?:the\s+)?queue|have\s+been\s+failing\s+for\s+a\s+long\s+time"
        r"|maximum\s+(?:\S+\s+)?(?:delivery\s+)?(?:time|attempts|retries)\s+(?:\S+\s+)?(?:exceeded|reached)"
        r"|after\s+(?:multiple|several|repeated)\s+(?:retries|attempts)|(?:message|delivery)\s+timed?\s*out"
        r"|giving\s+up\s+after|stopped\s+trying|\bexpired\b",
        False,
        "collected attempts gateway aborted retry retries expired queue day hour failing"
        " maximum time giving stopped",
    ),
    (
        R.NETWORK_ERROR,
        r"connection\s+(?:was\s+)?(?:refused|timed?\s*out|reset|closed|dropped|lost|"
        r"failed)|timed?\s*out|no\s+route\s+to\s+host|(?:network|host)\s+(?:is\s+)?unreachable"
        r"|lost\s+connection|(?:could\s+not|unable\s+to|cannot|can't|failed\s+to)\s+(?:connect|establish)"
        r"|(?:tls|ssl)\s+(?:handshake|negotiation)\s+(?:failed|error)|(?:server|host)\s+(?:is\s+)?(?:not\s+"
        r"responding|did\s+not\s+respond)|no\s+answer\s+from|broken\s+pipe|dns\s+(?:lookup\s+)?(?:error|"
        r"failure|timeout)|temporary\s+(?:dns|lookup)\s+failure",
        False,
        "connection connect time unreachable route establish handshake negotiation respond"
        " answer pipe dns lookup",
    ),
    (
        R.SYSTEM_ERROR,
        r"system\s+(?:error|failure|problem)|internal\s+(?:server\s+)?(?:error|failure)"
        r"|local\s+(?:error|problem)\s+in\s+processing|(?:mail|routing|message)\s+loops?\b|loop\s+detected"
        r"|too\s+many\s+hops|hop\s+count\s+exceeded|configuration\s+error|server\s+error|mailer\s+error"
        r"|(?:unable|failed)\s+to\s+(?:create|open|write|lock)|(?:command|pipe|program)\s+(?:\S+\s+)?"
        r"(?:died|failed|terminated)|insufficient\s+resources|resources?\s+(?:temporarily\s+)?unavailable"
        r"|temporary\s+(?:local\s+)?(?:failure|error|problem)|service\s+(?:not\s+available|"
        r"(?:temporarily\s+)?unavailable)|database\s+error|i/o\s+error|out\s+of\s+memory",
        False,
        "system internal local temporar loop hop configuration error unable failed died"
        " terminated resource service memory",
    ),
    (
        R.POLICY,
        r"not\s+accepted\s+here|\bpolic(?:y|ies)\b|content\s+(?:rejected|not\s+accepted|filter)|message\s+(?:content\s+)?"
        r"(?:rejected|refused|not\s+accepted|blocked|denied)|rejected\s+(?:by|due\s+to|for|because)\b"
        r"|not\s+(?:allowed|authori[sz]ed|permitted)|prohibited|forbidden|restricted"
        r"|administrative(?:ly)?\s+(?:prohibit\w*|denied|reasons?)|\bbanned\b|quarantin"
        r"|delivery\s+not\s+authori[sz]ed|rfc\s*\d+\s+(?:violation|compliant|non-?compliant)",
        False,
        "accepted polic content message rejected allowed authoriz authoris permitted prohibit"
        " forbidden restricted administrativ banned quarantin rfc",
    ),
)
"""The receiver's phrases, tried in order: the first that matches names the reason."""

WEAK_PATTERNS: tuple[tuple[BounceReason, str], ...] = (
    (
        R.USER_UNKNOWN,
        r"(?:recipient|address)\s+(?:\S+\s+)?(?:rejected|refused|denied|not\s+accepted)"
        r"|rejected\s+(?:recipient|address)|(?:mailbox|recipient|user)\s+(?:is\s+)?(?:unavailable|not\s+"
        r"available)|mailbox\s+(?:name\s+)?not\s+allowed|rcpt\s+to\s+(?:\S+\s+)?rejected",
    ),
    (R.BLOCKED, r"\bblock(?:ed)?\b"),
    (R.POLICY, r"\bdenied\b"),
)
"""Vague phrases, read only when neither the phrases above nor the status code say more."""

STATUS_REASONS: dict[str, BounceReason] = {
    # Exact codes first (class.subject.detail), then x.subject.detail, then x.subject.
    "5.4.1": R.USER_UNKNOWN,  # Office 365: "Recipient address rejected: Access denied"
    "4.4.1": R.NETWORK_ERROR,
    "4.7.0": R.RATE_LIMITED,
    "x.1.0": R.USER_UNKNOWN,
    "x.1.1": R.USER_UNKNOWN,
    "x.1.2": R.HOST_UNKNOWN,
    "x.1.3": R.USER_UNKNOWN,
    "x.1.6": R.HAS_MOVED,
    "x.1.7": R.POLICY,
    "x.1.8": R.POLICY,
    "x.1.10": R.USER_UNKNOWN,
    "x.2.1": R.MAILBOX_DISABLED,
    "x.2.2": R.MAILBOX_FULL,
    "x.2.3": R.MESSAGE_TOO_BIG,
    "x.2.4": R.SYSTEM_ERROR,
    "x.3.4": R.MESSAGE_TOO_BIG,
    "x.3": R.SYSTEM_ERROR,
    "x.4.4": R.HOST_UNKNOWN,
    "x.4.7": R.EXPIRED,
    "x.4": R.NETWORK_ERROR,
    "x.5.3": R.POLICY,
    "x.5": R.SYSTEM_ERROR,
    "x.6": R.POLICY,
    "x.7.5": R.AUTH_FAILURE,
    "x.7.7": R.AUTH_FAILURE,
    "x.7.8": R.AUTH_FAILURE,
    "x.7.9": R.AUTH_FAILURE,
    "x.7.10": R.AUTH_FAILURE,
    "x.7.11": R.AUTH_FAILURE,
    "x.7.12": R.AUTH_FAILURE,
    "x.7.13": R.MAILBOX_DISABLED,
    "x.7.14": R.AUTH_FAILURE,
    "x.7.17": R.HAS_MOVED,
    "x.7.18": R.HAS_MOVED,
    "x.7.20": R.AUTH_FAILURE,
    "x.7.21": R.AUTH_FAILURE,
    "x.7.22": R.AUTH_FAILURE,
    "x.7.23": R.AUTH_FAILURE,
    "x.7.24": R.AUTH_FAILURE,
    "x.7.25": R.AUTH_FAILURE,
    "x.7.26": R.AUTH_FAILURE,
    "x.7.27": R.AUTH_FAILURE,
    "x.7.28": R.RATE_LIMITED,
    "x.7.29": R.AUTH_FAILURE,
    "x.7.30": R.AUTH_FAILURE,
    "x.7": R.POLICY,
}
"""RFC 3463 codes; ``x.0.0``, ``x.1.x`` others and ``x.5.0`` say nothing on their own."""

REPLY_REASONS: dict[int, BounceReason] = {
    421: R.NETWORK_ERROR,
    451: R.SYSTEM_ERROR,
    452: R.MAILBOX_FULL,
    551: R.HAS_MOVED,
    552: R.MAILBOX_FULL,
}
"""SMTP reply codes that mean something alone; any other is ``unknown``."""
