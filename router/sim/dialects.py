"""The three providers' dialects as data, each taken from its document in shared/provider-docs.

Only what a document states is enforced: a simulator that invented stricter rules would
make router drop parameters a real provider takes. Where a document is silent the
simulator accepts the parameter and records it, so tests can see what arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ALL_EFFORTS = ("none", "minimal", "low", "medium", "high")

# The capabilities router routes by; a simulator refuses a request that uses one its
# document does not list (see checks.py for how a request uses each), so a routing bug
# shows as a 400 in tests instead of a silent success.
FEATURES = ("tools", "tool_role", "image", "audio", "file", "json_object", "json_schema", "logprobs", "n")


@dataclass(frozen=True)
class ModelRules:
    rejects: frozenset[str] = frozenset()
    """Parameters this model does not take: present at all -> the provider's 400."""
    allowed: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """Parameter -> the only values this model takes."""
    features: frozenset[str] | None = None
    """This model's capabilities (of FEATURES) where they differ from its dialect's."""


@dataclass(frozen=True)
class Dialect:
    name: str
    path: str
    """The chat path under the host; base_url in providers.yaml is everything before /chat/completions."""
    models: Mapping[str, ModelRules]
    roles: frozenset[str] | None = None
    """Message roles the document lists; None: not restricted."""
    part_types: frozenset[str] | None = None
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    exclusive: tuple[tuple[str, str], ...] = ()
    max_stop: int | None = None
    requires: Mapping[str, str] = field(default_factory=dict)
    """Parameter -> the boolean parameter that must be true for it."""
    stream_only: tuple[str, ...] = ()
    stream_usage: str = "none"
    """How usage appears in a stream: on_request (stream_options.include_usage),
    final_chunk (always on the finishing chunk) or none."""
    chunk_has_model: bool = True
    settlement_headers: bool = False
    """Answers carry X-Request-Id and X-Settlement-Key; X-Idempotency-Key settles once."""
    unknown_model: tuple[int, str, str] = (404, "model_not_found", "The model {model} does not exist")
    features: frozenset[str] = frozenset()
    """Capabilities (of FEATURES) its document lists for every model; ModelRules may differ."""
    usage_details: bool = False
    """Usage carries prompt_tokens_details.cached_tokens and completion_tokens_details.reasoning_tokens."""
    embedding_models: frozenset[str] = frozenset()
    """Models served at <prefix>/embeddings (prefix: `path` without /chat/completions)."""
    rerank_models: frozenset[str] = frozenset()
    """Models served at <prefix>/rerank."""

    def supports(self, model: str, feature: str) -> bool:
        rules = self.models.get(model)
        own = rules.features if rules is not None else None
        return feature in (own if own is not None else self.features)

    @property
    def prefix(self) -> str:
        """Everything before /chat/completions: what providers.yaml's base_url ends with."""
        return self.path.removesuffix("/chat/completions")

    @property
    def models_path(self) -> str:
        return self.prefix + "/models"

    @property
    def embeddings_path(self) -> str:
        return self.prefix + "/embeddings"

    @property
    def rerank_path(self) -> str:
        return self.prefix + "/rerank"


_NO_THINKING = ModelRules(rejects=frozenset({"thinking_enabled", "reasoning_effort"}))

# trinity-chat-completions.md + trinity-chat-advanced-params.md
TRINITY = Dialect(
    name="trinity",
    path="/chat/completions",  # documented as {TRINITY_BASE_URL}/chat/completions, no /v1
    models=MappingProxyType(
        {
            "doubao-seed-1-6-thinking-agent-preview": ModelRules(),
            # 思考模式(按模型): gpt-5.1 / gpt-5.2 / gpt-4o 不支持 thinking_enabled / reasoning_effort
            "gpt-5.1": _NO_THINKING,
            "gpt-5.2": _NO_THINKING,
            "gpt-4o": _NO_THINKING,
            # gemini-3-pro-preview: 不允许 thinking_enabled=false; reasoning_effort 为 low / medium / high
            "gemini-3-pro-preview": ModelRules(
                allowed={"thinking_enabled": (True,), "reasoning_effort": ("low", "medium", "high")}
            ),
            # gemini-3-flash-preview: 默认开启思考; reasoning_effort 含 minimal 等
            "gemini-3-flash-preview": ModelRules(allowed={"reasoning_effort": ALL_EFFORTS}),
        }
    ),
    roles=frozenset({"system", "user", "assistant", "tool"}),
    part_types=frozenset({"text", "image_url", "input_audio", "file"}),
    ranges={"max_completion_tokens": (1, 65536)},
    exclusive=(("max_tokens", "max_completion_tokens"),),
    max_stop=4,
    requires={"top_logprobs": "logprobs"},
    stream_only=("stream_options",),
    stream_usage="on_request",
    settlement_headers=True,
    unknown_model=(503, "model_not_found", "当前分组 default 下对于模型 {model} 无可用渠道"),
    features=frozenset(
        {
            "tools",  # advanced-params: tools | array | type: function + function.name
            "tool_role",  # messages[].role: system / user / assistant / tool
            "image",  # Part: image_url | URL 或 data:image/...;base64
            "audio",  # Part: input_audio | input_audio.data(Base64)+ format
            "file",  # Part: file | file_url(≤70MB,可传视频)
            "json_object",  # response_format | text / json_object / json_schema
            "json_schema",
            "logprobs",  # logprobs | boolean | 按模型能力; top_logprobs 需 logprobs=true
            # no "n": the advanced-params table has no n row
        }
    ),
    # Its usage carries cached and reasoning token details: it bills thinking (thinking_enabled,
    # reasoning_effort) and conversation caches, which router's accounting must pass through.
    usage_details=True,
)

# chenyu-chat-completions.md: roles are listed as system, user, assistant; the model id
# is the dated one (doubao-seed-2-0-lite-260428) and the answer's `model` is what ran.
CHENYU = Dialect(
    name="chenyu",
    path="/v1/chat/completions",
    models=MappingProxyType(
        {
            "doubao-seed-2-0-lite-260428": ModelRules(),
            # messages[].content: 视觉模型可传 OpenAI 多模态 content 数组 (the 多模态示例 sends image_url)
            "doubao-seed-1-6-vision-250815": ModelRules(features=frozenset({"image"})),
        }
    ),
    roles=frozenset({"system", "user", "assistant"}),
    unknown_model=(503, "model_not_found", "当前分组 default 下对于模型 {model} 无可用渠道"),
    # 请求参数 lists only model, messages, stream, temperature, max_tokens: no tools, no
    # response_format, no logprobs, no n; 文本模型可传字符串: only its vision model takes images.
    features=frozenset(),
)

# real200-chat-completions.md: its parameter table gives these ranges; its stream example
# carries neither `model` nor `created` in chunks, and no usage.
REAL200 = Dialect(
    name="real200",
    path="/v1/chat/completions",
    models=MappingProxyType({"gpt-4o": ModelRules(), "claude-sonnet-4": ModelRules()}),
    ranges={
        "temperature": (0, 2),
        "top_p": (0, 1),
        "presence_penalty": (-2, 2),
        "frequency_penalty": (-2, 2),
    },
    chunk_has_model=False,
    features=frozenset(
        {
            "tools",  # Body 参数: tools | array | 工具(函数调用)定义; finish_reason tool_calls
            "tool_role",  # function calling is documented, so tool results must come back in
            "json_object",  # response_format | object | 指定 JSON 响应格式
            # aggregator-structured-output.md (taken as real200's structured-output page):
            "json_schema",  # its 示例: response_format {"type": "json_schema", ...}
            "n",  # n | integer | 为每个输入消息生成多少个聊天补全选择
            # no image/audio/file: its messages 格式 shows string content only; no logprobs row
        }
    ),
    # Examples for --demo and the tests, not from a document: no provider document names an
    # embedding or rerank model, but the aggregator document's table of contents (taken as
    # real200's) lists "RAG(嵌入、重排序)" as an endpoint family.
    embedding_models=frozenset({"text-embedding-3-small"}),
    rerank_models=frozenset({"bge-reranker-v2-m3"}),
)

DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.name: d for d in (TRINITY, CHENYU, REAL200)})

# real200 documents its error types by status; the others are read the same way.
ERROR_TYPES: Mapping[int, str] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "invalid_api_key",
        402: "insufficient_quota",
        404: "invalid_request_error",
        429: "rate_limit_exceeded",
    }
)


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")
