"""The cues that tell a report from ordinary mail: senders, subjects, headers, phrases.

:func:`header_cues` reads the top header block once into :class:`Cues`: a
mail-system sender (MAILER-DAEMON, postmaster, "Mail Delivery System"...), an
empty Return-Path, RFC 3834 and vendor auto-reply headers, X-Failed-Recipients,
and what the subject says (:data:`SUBJECT_PATTERNS`, many languages). The
``*_PHRASES`` patterns are read in a report's own text (never in the quoted
original): a failure, a delay warning, a success, a complaint.
:data:`BODY_HINT` is a cheap scan of the raw bytes for the structures a report
carries, so ordinary mail with no cue at all is let go early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .mimeparts import Headers, decode_words
from .reportaddr import addresses_in

__all__ = [
    "BODY_HINT",
    "COMPLAINT_PHRASES",
    "DELAY_PHRASES",
    "FAILURE_PHRASES",
    "PERMANENT_PHRASES",
    "SUCCESS_PHRASES",
    "VACATION_PHRASES",
    "Cues",
    "header_cues",
    "hinted",
    "subject_kind",
]

_I = re.I

SUBJECT_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "success",
        r"delivery\s+status\s+notification\s*\((?:success|relay(?:ed)?|delivered)\)"
        r"|^(?:delivered|relayed|zugestellt|remis|entregado|consegnato|bezorgd)\s*:"
        r"|successful\s+(?:mail\s+)?delivery|delivery\s+(?:report|notification)\s*:\s*(?:delivered|"
        r"success)|^return\s+receipt|delivery\s+succeeded",
    ),
    (
        "delay",
        r"delivery\s+status\s+notification\s*\(delay\)|delayed\s+mail|(?:mail\s+|message\s+)?"
        r"delivery\s+(?:is\s+|has\s+been\s+)?delayed|^delayed\s*:|^warning\s*:\s*(?:could\s+not\s+send|"
        r"message\s+\S+\s+delayed|delayed)|still\s+being\s+retried|message\s+delayed|delay(?:ed)?\s+"
        r"(?:notification|notice)|not\s+yet\s+(?:been\s+)?delivered|zustellung\s+verz(?:ö|oe)gert"
        r"|remise\s+retard|entrega\s+retrasada|consegna\s+ritardata|vertraagd",
    ),
    (
        "failure",
        r"mail\s+failed|returning\s+(?:message\s+|mail\s+)?to\s+sender|error\s+sending"
        r"|fehlgeschlagen|n[ãa]o\s+[ée]\s+poss[íi]vel\s+entregar|kan\s+inte\s+levereras"
        r"|kunne\s+ikke\s+leveres|ei\s+voitu\s+toimittaa|nie\s+mo[żz]na\s+dostarczy"
        r"|无法(?:送达|投递|传递|递送)|배달되지|전송\s*실패|undelivered"
        r"|(?:user|recipient|mailbox)\s+unknown|unknown\s+(?:user|recipient)|no\s+such\s+user"
        r"|automatically\s+rejected|error\s+during\s+delivery|delivery\s+error|failed\s+mail"
        r"|undeliver(?:able|ed)|non[- ]?deliver(?:able|y)|delivery\s+status\s+notification\s*"
        r"\(fail(?:ure|ed)\)|delivery\s+(?:failure|failed|has\s+failed|problem)|mail\s+delivery\s+(?:failed|"
        r"failure|problem)|failure\s+notice|returned\s+(?:mail|message|to\s+sender)|mail\s+(?:system\s+)?"
        r"error|message\s+(?:not\s+delivered|delivery\s+fail\w*|could\s+not\s+be\s+delivered|rejected|"
        r"returned|blocked|bounced)|could\s+not\s+(?:be\s+)?deliver|(?:not|n't)\s+(?:be\s+)?delivered"
        r"|failed\s+(?:delivery|mail)|permanent\s+(?:delivery\s+)?(?:failure|error)|^rejected\s*:"
        r"|bounced\s+mail|\bndn\b|\bndr\b|nicht\s+zustellbar|unzustellbar|non\s+remis|non\s+distribuable"
        r"|[ée]chec\s+de\s+(?:la\s+)?(?:remise|distribution|livraison)|no\s+(?:se\s+(?:puede|pudo)\s+)?"
        r"entregad[oa]|onbestelbaar|niet\s+bezorgd|non\s+recapitabile|mancato\s+recapito|impossibile\s+"
        r"recapitare|não\s+entregue|olevererbar|kan\s+ikke\s+leveres|nedoru[čc]iteln|niedostarczon"
        r"|недоставлен|не\s+доставлен|teslim\s+edilemedi|配信(?:不能|エラー|失敗)|退信|未能送达|投递失败",
    ),
    (
        "report",
        r"^delivery\s+(?:status\s+)?(?:notification|report)|^mail\s+delivery\s+(?:report|"
        r"system|subsystem)|^(?:dsn|notification)\s*:|^delivery\s+notification",
    ),
    (
        "complaint",
        r"abuse\s+report|spam\s+(?:report|complaint)|complaint\s+(?:about|regarding|for)"
        r"|^complaint\b|feedback\s+(?:loop|report)|\bfbl\b|client\s+tos\s+notification|junk\s+(?:mail\s+)?"
        r"report|report\s+of\s+(?:spam|abuse)|^email\s+abuse",
    ),
    (
        "auto",
        r"^(?:\[?auto(?:matic)?[- ]?(?:reply|response|answer|antwort|risposta|respuesta"
        r"|resposta)\]?"
        r"|auto\s*:|auto[- ]?(?:reply|response)|automatische\s+(?:antwort|abwesenheitsnotiz)"
        r"|automatisch\s+antwoord|automatisk\s+svar|autosvar|abwesenheitsnotiz|abwesend\b"
        r"|out\s+of\s+(?:the\s+)?office|ooo\b|on\s+vacation|vacation\s+(?:reply|notice|message|"
        r"response|auto)|vacation\s*:|i\s+am\s+(?:on\s+vacation|out\s+of|away)|i'm\s+(?:on\s+vacation|"
        r"out\s+of|away)|away\s+from\s+(?:the\s+|my\s+)?(?:office|desk|e-?mail)|r[ée]ponse\s+automatique"
        r"|absen(?:ce|t)\s*(?::|-|$)|respuesta\s+autom[áa]tica|fuera\s+de\s+(?:la\s+)?oficina"
        r"|risposta\s+automatica|fuori\s+(?:sede|ufficio)|resposta\s+autom[áa]tica|automaattinen\s+vastaus"
        r"|automatyczna\s+odpowied|автоответ|автоматический\s+ответ|自动回复|自動回覆|自動応答|자동\s*응답"
        r"|afwezig|fr[åa]nvaro|frav[æa]r|poza\s+biurem|nep[řr][íi]tomnost)",
    ),
    (
        "auto_weak",
        r"^(?:thank\s+you\s+for\s+(?:your\s+)?(?:e-?mail|message|contacting)|we\s+(?:have\s+)?"
        r"received\s+your\s+(?:e-?mail|message|request)|your\s+(?:e-?mail|message|request)\s+"
        r"(?:has\s+been|was)\s+received|ticket\s+(?:received|created))",
    ),
)
"""What a subject says, by kind; the kind whose match starts earliest wins."""

_SUBJECTS = tuple((kind, re.compile(p)) for kind, p in SUBJECT_PATTERNS)
_TAGS = re.compile(r"^(?:\s*\[[^\]]{0,40}\]|\s*\*{2,}[^*]{0,30}\*{2,}|\s*\(\w{0,12}\))+\s*")
_REPLY_PREFIX = re.compile(
    r"^\s*(?:re|aw|sv|vs|fw|fwd|wg|tr|rv|rif|odp|antw)\s*(?:\[\d+\])?\s*:", _I
)

FAILURE_PHRASES = re.compile(
    r"(?:has\s+been|was|is\s+being)\s+returned|returned\s+because|error\s+during\s+delivery"
    r"|delivery\s+error|failed\s+recipients?|was\s+(?:automatically\s+)?rejected|无法(?:发送|送达)|"
    r"(?:could|can)(?:n[o']?t|\s+not)\s+be\s+deliver|couldn['\u2019]?t\s+be\s+deliver|can['\u2019]t\s+be\s+deliver"
    r"|(?:was|were|wasn['\u2019]?t|weren['\u2019]?t)\s+(?:not\s+)?deliver|(?:un|non[-"
    r" ]?)deliver(?:able|ed)"
    r"|delivery\s+(?:to\s+the\s+following\s+recipients?\s+)?(?:has\s+)?(?:failed|was\s+aborted)"
    r"|delivery\s+(?:failure|problems?)|(?:failed|unable|not\s+able|wasn['\u2019]?t\s+able)\s+to\s+deliver"
    r"|(?:could|can)(?:n[o']?t|\s+not)\s+deliver|failed\s+permanently|permanent(?:ly)?\s+(?:error|"
    r"failure|fatal|failed|rejected)|fatal\s+errors?|address(?:\(es\))?\s+failed|following\s+(?:address"
    r"(?:es)?|recipients?)\s+(?:had\s+permanent|failed|could\s+not|cannot)|returned\s+(?:mail|to\s+"
    r"sender)|mail\s+delivery\s+(?:failed|failure|software)|did\s+not\s+reach\s+(?:the\s+following|"
    r"some\s+or\s+all)|(?:rejected|refused)\s+(?:your|the)\s+message|message\s+(?:was\s+)?(?:rejected|"
    r"refused|bounced)|qmail-send\s+program|this\s+is\s+the\s+mail\s+system\s+at|not\s+listed\s+in\s+"
    r"(?:the\s+)?(?:domino\s+directory|public\s+name)|i['\u2019]m\s+afraid\s+i\s+wasn['\u2019]?t\s+able"
    r"|konnte\s+nicht\s+zugestellt|nicht\s+zugestellt|unzustellbar|zustellung\s+(?:ist\s+)?fehlgeschlagen"
    r"|n['\u2019]a\s+pas\s+pu\s+[êe]tre\s+(?:remis|distribu|livr)|non\s+remis|non\s+distribuable"
    r"|impossible\s+de\s+(?:remettre|distribuer|livrer)|[ée]chec\s+de\s+(?:la\s+)?(?:remise|distribution)"
    r"|no\s+(?:se\s+)?(?:pudo|puede|ha\s+podido)\s+(?:ser\s+)?entreg|imposible\s+entregar"
    r"|impossibile\s+recapitare|non\s+(?:è\s+stato\s+possibile\s+)?recapita|mancat[ao]\s+consegna"
    r"|niet\s+(?:worden\s+)?(?:bezorgd|afgeleverd)|onbestelbaar|n[ãa]o\s+(?:p[ôo]de|pode|foi\s+poss[íi]vel)"
    r"\s+(?:ser\s+)?entreg|falha\s+na\s+entrega|не\s+(?:может\s+быть\s+|удалось\s+|было\s+)?достав"
    r"|недоставлен|nie\s+(?:można\s+|została\s+|zostało\s+)?dostarcz|kunne\s+ikke\s+leveres"
    r"|kan\s+(?:ikke|inte)\s+levereras?|kunde\s+inte\s+levereras|nelze\s+doru[čc]it|teslim\s+edilemedi"
    r"|配信(?:でき|不能|失敗|エラー)|送信できませんでした|无法投递|無法傳遞|投递失败|退信|未能(?:送达|投递)",
)
"""A report's own words that a delivery failed."""

DELAY_PHRASES = re.compile(
    r"warning\s+(?:message\s+)?only|this\s+is\s+(?:just\s+)?a\s+warning|(?:do|need)\s+not\s+"
    r"(?:need\s+to\s+)?resend|not\s+yet\s+been\s+delivered|has\s+not\s+yet\s+been"
    r"|hasn['\u2019]?t\s+been\s+delivered\s+yet|not\s+been\s+delivered\s+yet"
    r"|will\s+(?:continue\s+to\s+(?:try|attempt|retry)|keep\s+(?:on\s+)?trying|retry|be\s+retried"
    r"|try\s+again|continue\s+(?:trying|attempting))|(?:delivery|retries|attempts)\s+will\s+continue"
    r"|still\s+(?:trying|being\s+retried|in\s+the\s+queue)|delivery\s+(?:is|has\s+been)\s+delayed"
    r"|delivery\s+delayed|could\s+not\s+send\s+message\s+for\s+past|no\s+action\s+is\s+required"
    r"|zustellung\s+verz(?:ö|oe)gert",
)
"""A report's own words that delivery is only delayed (and still being tried)."""

VACATION_PHRASES = re.compile(
    r"\b(?:i\s+am|i['\u2019]m|i\s+will\s+be)\s+(?:currently\s+)?(?:out\s+of\s+(?:the\s+)?office|on\s+"
    r"(?:vacation|holiday|leave|annual\s+leave|parental\s+leave)|away\s+(?:from|until))"
    r"|(?:out\s+of\s+(?:the\s+)?office|on\s+vacation|on\s+holiday)\s+(?:until|from|till|through)"
    r"|limited\s+access\s+to\s+(?:my\s+)?e-?mail|this\s+is\s+an\s+automat(?:ic|ed)\s+(?:reply|response)"
    r"|je\s+suis\s+absent|ich\s+bin\s+(?:bis|vom|derzeit|zur\s+zeit)|abwesenheit|estar[ée]\s+fuera"
)
"""An auto-reply's own words (read only when the headers say the mail is unattended)."""

PERMANENT_PHRASES = re.compile(
    r"permanent(?:ly)?|fatal|giv(?:ing|en)\s+up|will\s+not\s+(?:be\s+)?retr|no\s+further\s+attempts"
    r"|stopped\s+trying|retry\s+timeout\s+exceeded",
)
"""A report's own words that no more attempts will be made."""

SUCCESS_PHRASES = re.compile(
    r"(?:has|have)\s+been\s+(?:successfully\s+)?(?:delivered|relayed)|successfully\s+delivered"
    r"|delivery\s+to\s+(?:the\s+following|these)\s+recipients?\s+(?:or\s+groups\s+)?(?:is\s+complete|"
    r"succeeded|was\s+successful)|delivery\s+succeeded|was\s+delivered\s+(?:successfully|to\s+the)",
)
"""A report's own words that a message was delivered or relayed."""

COMPLAINT_PHRASES = re.compile(
    r"this\s+is\s+an?\s+(?:e-?mail\s+)?abuse\s+report|abuse\s+report|feedback[- ]loop"
    r"|spam\s+complaint"
    r"|complaint\s+(?:about|regarding)|(?:reported|marked|flagged)\s+(?:this\s+(?:message|e-?mail)\s+)?"
    r"as\s+(?:spam|junk)|junk\s+mail\s+report|unsolicited\s+(?:commercial\s+)?e-?mail\s+report",
)
"""Words of a provider's feedback loop that is not in ARF form."""

BODY_HINT = (
    b"delivery-status",
    b"feedback-report",
    b"disposition-notification",
    b"notificationtype",
    b"eventtype",
    b"final-recipient",
    b"x-hmxmroriginalrecipient",
    b"abuse report",
    b"feedback loop",
    b"diagnostic-code",
)
"""What a report's raw bytes carry (lower-cased) even when its headers say nothing."""


def hinted(raw: bytes, limit: int = 300_000) -> bool:
    """Whether the start of ``raw`` carries one of :data:`BODY_HINT` (any case)."""
    window = raw[:limit].lower()
    return any(hint in window for hint in BODY_HINT)


_DAEMON = re.compile(
    r"mailer[-_. ]?daemon|post[-_.]?master|mail[-_. ]?daemon|\bmdaemon|mail\s+delivery\s+(?:system|"
    r"subsystem|service)|microsoftexchange[0-9a-f]{8,}|^bounces?@|delivery\s+(?:status\s+)?"
    r"(?:notification|subsystem|system)|mail\s+administrator|courier\s+mail\s+server"
    r"|returned\s+mail|undeliverable|nondeliverable|mail\s+system\b",
    _I,
)
_FBL = re.compile(
    r"^(?:scomp|fbl|feedback[-_.]?loop|feedbackloop|abuse|complaints?|arf|jmrp|spam[-_.]?report)"
    r"[\w.+-]*@|@(?:fbl|feedback|arf)\.",
    _I,
)


@dataclass(slots=True)
class Cues:
    """What the top header block says about the kind of message."""

    subject: str = ""
    subject_kind: str | None = None
    daemon: bool = False
    """From, Sender or Return-Path is a mail system (MAILER-DAEMON, postmaster...)."""
    empty_return_path: bool = False
    auto_replied: bool = False
    """RFC 3834 ``auto-replied``, X-Autoreply, ``Precedence: auto_reply``..."""
    auto_generated: bool = False
    """``auto-generated``/``auto-notified``, X-Auto-Response-Suppress, bulk precedence."""
    failed_header: list[str] = field(default_factory=list)
    fbl_sender: bool = False
    report_type: str = ""
    bulk: bool = False
    """``Precedence: bulk``/``junk``/``list``: mass mail, not by itself a cue."""

    @property
    def any(self) -> bool:
        """Whether any cue at all is present (else the message is ordinary)."""
        return bool(
            self.subject_kind
            or self.daemon
            or self.empty_return_path
            or self.auto_replied
            or self.auto_generated
            or self.failed_header
            or self.fbl_sender
            or self.report_type
        )


def subject_kind(subject: str) -> str | None:
    """What ``subject`` says: success, delay, failure, report, complaint, auto, auto_weak.

    Behind a reply or forward prefix (``Re:``, ``Fwd:``...) only a failure or
    delay counts, prefixed with ``prefixed_`` (a person may be quoting one).
    """
    subject = subject.lower()
    prefixed = _REPLY_PREFIX.match(subject)
    text = subject[prefixed.end() :] if prefixed else subject
    best: tuple[int, str] | None = None
    for candidate in (text.strip(), _TAGS.sub("", text)):
        for kind, pattern in _SUBJECTS:
            match = pattern.search(candidate)
            if match is not None and (best is None or match.start() < best[0]):
                best = (match.start(), kind)
    if best is None:
        return None
    if prefixed:
        return f"prefixed_{best[1]}" if best[1] in ("failure", "delay") else None
    return best[1]


def header_cues(headers: Headers, ctype: str, params: dict[str, str]) -> Cues:
    """The cues of a message's top header block (``ctype``/``params``: its Content-Type)."""
    cues = Cues()
    cues.subject = decode_words(headers.get("subject") or "")
    cues.subject_kind = subject_kind(cues.subject) if cues.subject else None
    senders = [decode_words(v) for name in ("from", "sender") for v in headers.get_all(name)]
    return_path = headers.get("return-path")
    if return_path is not None:
        bare = return_path.strip().strip("<>").strip()
        cues.empty_return_path = not bare
        senders.append(return_path)
    cues.daemon = any(_DAEMON.search(value) for value in senders)
    cues.fbl_sender = any(_FBL.search(a) for a in addresses_in(senders[:2]))
    auto = (headers.get("auto-submitted") or "").strip().lower()
    precedence = (headers.get("precedence") or headers.get("x-precedence") or "").strip().lower()
    cues.auto_replied = (
        auto.startswith("auto-replied")
        or precedence.startswith("auto_reply")
        or (headers.get("x-autogenerated") or "").strip().lower() == "reply"
        or any(
            (headers.get(name) or "yes").strip().lower() not in ("no", "false", "0")
            for name in (
                "x-autoreply",
                "x-autorespond",
                "x-autoresponder",
                "x-auto-reply",
                "x-mail-autoreply",
                "x-vacation",
                "x-autoreply-from",
            )
            if name in headers
        )
    )
    cues.auto_generated = (
        auto.startswith(("auto-generated", "auto-notified"))
        or "x-auto-response-suppress" in headers
    )
    cues.bulk = precedence in ("bulk", "junk", "list")
    cues.failed_header = addresses_in(
        part for value in headers.get_all("x-failed-recipients") for part in value.split(",")
    )
    if ctype == "multipart/report":
        cues.report_type = (params.get("report-type") or "unknown").lower()
    return cues
