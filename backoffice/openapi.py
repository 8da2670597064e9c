"""The OpenAPI 3.1 description of the customer API, written by hand to say what the code does
(a test checks that every route is described and every described route exists)."""

from __future__ import annotations

from typing import Any

from backoffice.services.sql import MAX_ID

_DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2,4}$", "examples": ["0.045"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_STATUS = {
    "type": "string",
    "enum": [
        "queued",
        "scheduled",
        "submitted",
        "delivered",
        "undeliverable",
        "expired",
        "rejected",
        "refused",
        "refunded",
        "unsubscribed",
    ],  # fmt: skip
    "description": (
        "queued 排队中；scheduled 定时发送（send_at 或合同发送时段）；submitted 已提交运营商；delivered 已送达；"
        "undeliverable 无法送达；expired 已过期；rejected 被运营商拒绝；refused 内容违规拒发；"
        "refunded 已退款：发送失败（运营商拒绝、超过有效期等），或未发送（账户停发时 account_stopped 给出原因，"
        "对方回复退订时见 reason，客户取消定时发送时 status_name 为已取消，已退款）；unsubscribed 对方已退订，未发送也未计费"
    ),
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(server_url: str) -> dict[str, Any]:
    errors = {
        "400": _error("请求格式有误（字段缺失、号码超过上限、时间格式不对等），fields 说明各字段的问题"),
        "413": _error("请求体过大（上限默认 16 MB，message 中给出）：未做任何处理"),
        "401": _error("缺少 API 密钥，或密钥无效、已吊销"),
        "403": _error("账户未开通、已暂停、已关闭或已被列入黑名单，或合同已到期、已终止，不能发送"),
        "409": _error("client_ref 已用于另一个内容不同的请求，或已被本账户的另一个子号使用"),
        "503": _error("数据库繁忙：本次请求未做任何处理（未发送、未扣费），请按 Retry-After 稍后重试"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "短信发送接口（二次开发接口）",
            "version": "1.0.0",
            "description": (
                "企业客户通过本接口发送短信、查询状态和余额。所有请求在请求头中携带 `Authorization: Bearer <API 密钥>`，"
                "密钥在客户门户“API 密钥”页面创建（只显示一次）。金额为十进制字符串（元），时间为 ISO 8601，"
                '不带时区的时间按北京时间理解，返回的时间均为 UTC。错误统一为 `{"error": {"code", "message"}}`。'
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/messages": {
                "post": {
                    "operationId": "sendMessages",
                    "summary": "发送短信（一次最多 1,000 个号码）",
                    "description": (
                        "整批一次扣费：余额不足以支付整批时返回 402，什么也不发送、不扣费。每个号码的价格为账户受理时的单价 × 拆分条数。"
                        "内容须带签名【…】（账户设置为自动添加时自动加上）；含违禁词时整批拒发并返回 422，但按合同约定仍扣除发送费用"
                        "（响应体中同时给出每个号码的结果和余额）。号码段群发（连续号码过多）、内容过长、缺少签名时返回 422，不扣费。"
                        "已退订的号码不发送、不计费；合同约定 10 小时内相同内容重复发送的，照常发送计费并标记 duplicate"
                        "（同一请求中重复的号码也是如此）。其他合同下，同一请求中重复的号码（规范化后相同，如 13800138000 与"
                        " +86 138-0013-8000）只发送、计费一次：响应中每个号码仍各有一条结果，重复的那几条 status 为 repeated，"
                        "id 为 null，不计费，reason 指出与第几个号码重复。"
                        "合同约定发送时段之外受理的短信顺延至次日（或当日）08:05 发送。带相同 client_ref 的重试返回第一次的结果，"
                        "不会重复发送或扣费（响应头 Idempotent-Replayed: true）。"
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}}},
                    },
                    "responses": {
                        "202": {
                            "description": "已受理：每个号码一条结果",
                            "headers": {
                                "Idempotent-Replayed": {
                                    "schema": {"const": "true"},
                                    "description": "带相同 client_ref 的重试：返回的是第一次的结果，没有再次发送或扣费",
                                }
                            },
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendResult"}}},
                        },
                        **errors,
                        "402": _error("余额不足以支付整批短信：未发送，也未扣费"),
                        "422": {
                            "description": (
                                "内容被拒：error.code 为 content_refused（违禁词，已按合同扣费，响应体同时含 messages 和 balance）、"
                                "number_range（号码段群发）、missing_signature（缺少或不符的签名）、too_long（超过最大拆分条数）、"
                                "no_valid_recipients（没有有效号码）"
                            ),
                            "content": {
                                "application/json": {
                                    "schema": {
                                        # anyOf: content_refused's body is both (oneOf would refuse it)
                                        "anyOf": [{"$ref": "#/components/schemas/SendResult"}, {"$ref": "#/components/schemas/Error"}]
                                    }
                                }
                            },
                        },
                        "429": {
                            **_error("超过账户的发送速率（每秒条数），请按 Retry-After 秒数后重试"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "建议等待的秒数"}},
                        },
                    },
                },
                "get": {
                    "operationId": "statusReports",
                    "summary": "状态报告：某时间之后状态有变化的短信（分页）",
                    "description": (
                        "企业主账号的密钥可查看全部子号的短信；子号的密钥只能查看该子号发送的短信（单条查询同样如此）。"
                        "状态变化在发生约 5 秒后（STATUS_REPORT_SETTLE_SECONDS）才列入报告，响应中的 as_of 之前的变化已全部列出，"
                        "因此用上一页最后一条的 updated_at 和 id 继续查询不会漏掉任何变化"
                    ),
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "schema": _TIME,
                            "description": "返回状态在此时间及之后变化的短信，默认为 24 小时前；不带时区按北京时间",
                        },
                        {
                            "name": "after_id",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID, "default": 0},
                            "description": "翻页用：与 since 一起取自上一页的 next",
                        },
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    ],
                    "responses": {
                        "200": {
                            "description": "按状态变化时间从早到晚排列",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StatusReports"}}},
                        },
                        "400": _error(
                            "查询参数有误（since 时间格式不对或超出范围、after_id 或 limit 不是整数或超出范围），fields 说明各参数的问题"
                        ),
                        "401": errors["401"],
                    },
                },
            },
            "/messages/{id}": {
                "get": {
                    "operationId": "getMessage",
                    "summary": "查询一条短信的状态（含各拆分条的回执）",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {
                        "200": {
                            "description": "短信详情",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
                        },
                        "401": errors["401"],
                        "404": _error("短信不存在或不属于本账户"),
                    },
                }
            },
            "/replies": {
                "get": {
                    "operationId": "listReplies",
                    "summary": "回复（上行短信）：收件人回复的内容，回复 TD、退订等的号码已自动加入退订名单（unsubscribe 为 true）",
                    "description": (
                        "按收到时间从早到晚排列，分页方式与状态报告相同：用上一页的 next（since 与 after_id）继续查询；"
                        "子号的密钥只读到回复它的短信的回复（该号码在回复之前最后收到的本账户短信是它发的），企业号的密钥读到全部"
                    ),
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "schema": _TIME,
                            "description": "返回此时间及之后收到的回复，默认为 24 小时前；不带时区按北京时间",
                        },
                        {
                            "name": "after_id",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                            "description": "翻页用：与 since 一起取自上一页的 next",
                        },
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    ],
                    "responses": {
                        "200": {
                            "description": "回复列表",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["replies", "has_more", "as_of", "next", "next_url"],
                                        "properties": {
                                            "replies": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "required": ["id", "from", "to", "content", "received_at", "unsubscribe"],
                                                    "properties": {
                                                        "id": {"type": "integer"},
                                                        "from": {"type": "string", "description": "回复的手机号码"},
                                                        "to": {"type": "string", "description": "回复到的号码（服务代码及扩展）"},
                                                        "content": {"type": "string"},
                                                        "received_at": _TIME,
                                                        "unsubscribe": {"type": "boolean", "description": "是否为退订回复"},
                                                    },
                                                },
                                            },
                                            "has_more": {"type": "boolean"},
                                            "as_of": _TIME,
                                            "next": {
                                                "type": ["object", "null"],
                                                "properties": {"since": _TIME, "after_id": {"type": "integer"}},
                                            },
                                            "next_url": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error("查询参数有误（since、after_id 或 limit），fields 说明各参数的问题"),
                        "401": errors["401"],
                    },
                }
            },
            "/requests/{request_id}/cancel": {
                "post": {
                    "operationId": "cancelRequest",
                    "summary": "取消定时发送：该批中尚未到时间、尚未发出的短信不再发送，费用退回（状态 refunded，status_name 已取消，已退款）",
                    "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {
                        "200": {
                            "description": "已取消的条数、退回的金额和当前余额",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["request_id", "cancelled", "refunded", "balance"],
                                        "properties": {
                                            "request_id": {"type": "integer"},
                                            "cancelled": {"type": "integer"},
                                            "refunded": _DECIMAL,
                                            "balance": _DECIMAL,
                                        },
                                    }
                                }
                            },
                        },
                        "401": errors["401"],
                        "404": _error("发送批次不存在，或不属于本子号"),
                        "409": _error("该批已没有可取消的定时短信（已发出、正在发送或已取消）：未做任何更改"),
                    },
                }
            },
            "/balance": {
                "get": {
                    "operationId": "getBalance",
                    "summary": "账户余额",
                    "responses": {
                        "200": {
                            "description": "余额",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Balance"}}},
                        },
                        "401": errors["401"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "本文档",
                    "security": [],
                    "responses": {
                        "200": {"description": "OpenAPI 3.1 文档", "content": {"application/json": {"schema": {"type": "object"}}}}
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "API 密钥（sk_ 开头）"}},
            "schemas": {
                "SendRequest": {
                    "type": "object",
                    "required": ["to", "content"],
                    "properties": {
                        "to": {
                            "description": "手机号码（可带 +86/0086），或最多 1,000 个号码的数组；字符串中的多个号码也可用逗号分隔",
                            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1000}],
                        },
                        "content": {"type": "string", "minLength": 1, "description": "短信内容，须含签名【…】；签名计入字数"},
                        "client_ref": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 64,
                            "pattern": "\\S",
                            "description": "幂等键：同一账户内唯一，重试时带上相同的值；1–64 个可打印字符，不能全是空白",
                        },
                        "send_at": {
                            **_TIME,
                            "description": "定时发送时间（最多 30 天后，且不晚于固定期限合同的最后一天；早于当前 10 分钟以上或超出这些范围为 400）；不带时区按北京时间",
                        },
                    },
                },
                "Recipient": {
                    "type": "object",
                    "required": ["id", "to", "carrier", "segments", "charge", "status", "duplicate", "reason"],
                    "properties": {
                        "id": {
                            "type": ["integer", "null"],
                            "description": "短信编号；号码无效、合同未开通该运营商网络或与前面的号码重复（repeated）时为 null",
                        },
                        "to": {"type": "string", "description": "规范化后的 11 位号码；无效号码原样返回"},
                        "carrier": {"type": ["string", "null"], "enum": ["cmcc", "cucc", "ctcc", "cbn", None]},
                        "carrier_name": {"type": ["string", "null"]},
                        "segments": {
                            "type": "integer",
                            "description": "拆分条数（计费条数）；未发送的号码（invalid、network_not_opened、repeated）为 0",
                        },
                        "charge": _DECIMAL,
                        "status": {
                            **_STATUS,
                            "enum": [*_STATUS["enum"], "invalid", "network_not_opened", "repeated"],
                            "description": _STATUS["description"]
                            + "；invalid 号码无效；network_not_opened 合同未开通该运营商网络，未发送也未计费"
                            + "；repeated 与本请求中前面的号码相同，只发送那一条，本条未发送也未计费",
                        },
                        "duplicate": {"type": "boolean"},
                        "reason": {"type": ["string", "null"], "description": "拒发、跳过、顺延或重复的原因（中文）"},
                    },
                },
                "SendResult": {
                    "type": "object",
                    "required": ["request_id", "messages", "balance", "charged", "send_at"],
                    "properties": {
                        "request_id": {"type": "integer"},
                        "client_ref": {"type": ["string", "null"]},
                        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Recipient"}},
                        "balance": {**_DECIMAL, "description": "受理后的余额（元）"},
                        "charged": {**_DECIMAL, "description": "本次扣费合计（元），含违约金"},
                        "penalty": {**_DECIMAL, "description": "其中按合同收取的违约金（元）：内容含违禁词且合同有此约定时才有"},
                        "send_at": {**_TIME, "description": "计划发送时间（UTC）"},
                        "error": {"$ref": "#/components/schemas/ErrorBody"},
                    },
                },
                "Message": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "request_id": {"type": "integer"},
                        "to": {"type": "string"},
                        "carrier": {"type": "string", "description": "运营商（携号转网时以运营商回报为准）"},
                        "content": {"type": "string"},
                        "segments": {"type": "integer"},
                        "charge": {
                            **_DECIMAL,
                            "description": "受理时扣除的费用（元）；退款后仍为原值，实际费用为 charge − refunded",
                        },
                        "refunded": {
                            **_DECIMAL,
                            "description": "已退回余额的金额（元）：status 为 refunded 时等于 charge，否则为 0.00。"
                            "统计实际费用时请用 charge − refunded 求和",
                        },
                        "status": _STATUS,
                        "status_name": {
                            "type": "string",
                            "description": "状态的中文说明；未发送的退款不是“发送失败，已退款”，而是“未发送，已退款（账户已暂停发送）”等"
                            "（账户停发）或“未发送，已退款（对方已回复退订）”",
                        },
                        "account_stopped": {
                            "type": ["string", "null"],
                            "enum": ["suspended", "blacklisted", "closed", "awaiting_payment", None],
                            "description": "status 为 refunded 且短信因账户停发而未发送时，账户停发的原因：suspended 已暂停发送，"
                            "blacklisted 已列入黑名单，closed 已关闭（费用退回后随余额不予退还），awaiting_payment 未开通（待付款）；"
                            "运营商拒绝、未能送达等发送失败的退款，以及其他状态，均为 null",
                        },
                        "duplicate": {"type": "boolean"},
                        "reason": {
                            "type": ["string", "null"],
                            "description": "拒发、跳过或退款的原因；此外与发送时的响应相同：顺延至合同发送时段、10 小时内重复发送的说明",
                        },
                        "accepted_at": _TIME,
                        "send_at": _TIME,
                        "submitted_at": _NULLABLE_TIME,
                        "done_at": _NULLABLE_TIME,
                        "updated_at": _TIME,
                        "parts": {
                            "type": "array",
                            "description": "仅在单条查询中返回",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "seq": {"type": "integer"},
                                    "total": {"type": "integer"},
                                    "submitted_at": _NULLABLE_TIME,
                                    "receipt_stat": {"type": ["string", "null"], "examples": ["DELIVRD", "UNDELIV", "EXPIRED", "REJECTD"]},
                                    "receipt_at": _NULLABLE_TIME,
                                },
                            },
                        },
                    },
                },
                "StatusReports": {
                    "type": "object",
                    "properties": {
                        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                        "has_more": {"type": "boolean"},
                        "as_of": {**_TIME, "description": "报告完整到此时刻：此后的状态变化在之后的查询中返回"},
                        "next": {
                            "type": ["object", "null"],
                            "properties": {"since": _TIME, "after_id": {"type": "integer"}},
                            "description": "下一页的 since 和 after_id",
                        },
                        "next_url": {"type": ["string", "null"]},
                    },
                },
                "Balance": {
                    "type": "object",
                    "properties": {
                        "account": {"type": "string"},
                        "status": {"type": "string", "enum": ["awaiting_payment", "active", "suspended", "closed"]},
                        "balance": _DECIMAL,
                        "currency": {"const": "CNY"},
                        "price_per_message": _DECIMAL,
                        "messages_left": {"type": ["integer", "null"]},
                        "rate_limit_per_second": {"type": "integer"},
                        "blacklisted": {"type": "boolean"},
                    },
                },
                "ErrorBody": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "examples": ["insufficient_balance", "content_refused", "rate_limited"]},
                        "message": {"type": "string", "description": "可直接展示给用户的中文说明"},
                        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}},
                },
            },
        },
    }
