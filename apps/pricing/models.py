"""The effective-dated price book. Each row is a price version; a run stores the versions it was rated with."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from apps.core.money import PRICE_FIELD_KWARGS

from .rating import multiple_text

_non_negative = [MinValueValidator(0)]
# Price multipliers such as 2 or 1.5 (long context).
MULTIPLIER_FIELD_KWARGS = {"max_digits": 6, "decimal_places": 3}
# A version's long-context pricing (rating.LongContextRate): all three set, or none.
LONG_CONTEXT_FIELDS = ("long_context_above_tokens", "long_context_input_multiplier", "long_context_output_multiplier")

# How a price book change reaches stored runs: an explicit, audited re-rating of a period (docs/pricing.md).
REPRICE_COMMAND = "`manage.py reprice --start … --end …`"

# The fees rating multiplies into a run's cost_tools_usd. Statements and reconciliation price a version's
# billable tool use (ToolUsageRollup, Run.tool_price) at the fees the version holds, so once a run was rated
# with it a fee edited in place would bill the change, closed months included, with the ledger unchanged.
# Storage prices are not among them: the daily meter stores what it charged.
TOOL_RUN_FEE_FIELDS = ("code_interpreter_session_usd", "file_search_call_usd_per_1k", "web_search_call_usd_per_1k")
TOOL_RUN_FEES_LOCKED = (
    "Runs were rated with this tool price version, so its fees (code interpreter, file search, web search) "
    "cannot change in place: statements bill its tool use at them. Add a new version effective from the date "
    f"the fees change, then re-rate that period with {REPRICE_COMMAND}."
)


class ModelPrice(models.Model):
    """USD per 1M tokens for one model (or model family) from `effective_from` (UTC date) on.

    Input tokens as OpenAI reports them include the cached and cache-write ones, and output tokens
    include reasoning: rating bills each token once, at the price of its kind (see rating.py)."""

    model = models.CharField(max_length=255, help_text="A family (gpt-5.4) or a dated snapshot (gpt-5.4-2026-03-05).")
    effective_from = models.DateField()
    input_usd_per_1m = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    cached_input_usd_per_1m = models.DecimalField(
        **PRICE_FIELD_KWARGS, null=True, blank=True, validators=_non_negative,
        help_text="Empty: cached tokens bill at the input price.",
    )
    output_usd_per_1m = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    cache_write_usd_per_1m = models.DecimalField(
        **PRICE_FIELD_KWARGS, null=True, blank=True, validators=_non_negative,
        help_text="Empty: cache-write tokens bill at the input price.",
    )
    # Long-context pricing (rating.LongContextRate): all three set, or none (the version has none).
    long_context_above_tokens = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="A request with more input tokens than this bills all its tokens at the long-context multipliers "
                  "(OpenAI's current models: 272000). Empty: no long-context pricing.",
    )
    long_context_input_multiplier = models.DecimalField(
        **MULTIPLIER_FIELD_KWARGS, null=True, blank=True, validators=_non_negative,
        help_text="Multiplies the input, cached-input and cache-write prices of a long-context request (e.g. 2).",
    )
    long_context_output_multiplier = models.DecimalField(
        **MULTIPLIER_FIELD_KWARGS, null=True, blank=True, validators=_non_negative,
        help_text="Multiplies the output price of a long-context request (e.g. 1.5).",
    )
    source = models.CharField(max_length=300, blank=True)
    source_date = models.DateField(null=True, blank=True)
    verify = models.BooleanField(default=False, help_text="Quoted by third parties; check OpenAI's pricing page.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="modelprice_unique_model_date"),
            models.CheckConstraint(
                condition=(Q(long_context_above_tokens__isnull=True, long_context_input_multiplier__isnull=True,
                             long_context_output_multiplier__isnull=True)
                           | Q(long_context_above_tokens__isnull=False, long_context_input_multiplier__isnull=False,
                               long_context_output_multiplier__isnull=False)),
                name="modelprice_long_context_whole",
                violation_error_message="Long-context pricing needs its threshold and both multipliers, or none of "
                                        "them.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"

    def clean(self):
        super().clean()
        missing = [name for name in LONG_CONTEXT_FIELDS if getattr(self, name) is None]
        if missing and len(missing) < len(LONG_CONTEXT_FIELDS):
            raise ValidationError({name: "Set with the other long-context fields, or leave all three empty."
                                   for name in missing})

    @property
    def version(self) -> str:
        return f"{self.model}@{self.effective_from.isoformat()}"

    @property
    def long_context_text(self) -> str:
        """The version's long-context pricing as the Prices page's narrow column shows it ("above 272K: ×2 in,
        ×1.5 out"; "" for none)."""
        tokens = self.long_context_above_tokens
        if tokens is None:
            return ""
        threshold = f"{tokens // 1000:,}K" if tokens % 1000 == 0 and tokens else f"{tokens:,}"
        return (f"above {threshold}: ×{multiple_text(self.long_context_input_multiplier)} in, "
                f"×{multiple_text(self.long_context_output_multiplier)} out")

    def billed_per_1m(self, attribute: str):
        """What a token kind bills at: an empty cached-input or cache-write price means the input price (as
        rating does), so pages can show it instead of a dash."""
        value = getattr(self, attribute)
        return self.input_usd_per_1m if value is None else value


class ToolPrice(models.Model):
    """Tool and storage prices from `effective_from` on (one row per change, all tools together)."""

    effective_from = models.DateField(unique=True)
    code_interpreter_session_usd = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    file_search_call_usd_per_1k = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    web_search_call_usd_per_1k = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    vector_storage_usd_per_gb_day = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    vector_storage_free_gb = models.DecimalField(**PRICE_FIELD_KWARGS, validators=_non_negative)
    source = models.CharField(max_length=300, blank=True)
    source_date = models.DateField(null=True, blank=True)
    verify = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-effective_from"]

    def __str__(self) -> str:
        return f"tools from {self.effective_from}"

    @property
    def version(self) -> str:
        return f"tools@{self.effective_from.isoformat()}"
