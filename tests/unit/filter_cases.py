"""Conformance cases for fanout.filters, each traced to the AWS page or event-ruler file it is from.

VALID holds (pattern, event, match) triples; INVALID holds patterns AWS / event-ruler refuse,
with the configuration path fanout must name (patterns sit at ``filters[0]``).
"""

from __future__ import annotations

import copy
from typing import Any

# --- Sources ---------------------------------------------------------------------------------

EB_OPS = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html"
EB_FILTERING = (
    "https://docs.aws.amazon.com/eventbridge/latest/userguide/"
    "eb-event-patterns-content-based-filtering.html"
)
EB_PATTERN = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern.html"
EB_ARRAYS = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-arrays.html"
EB_NULL = (
    "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-null-values.html"
)
LAMBDA = "https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html"
LAMBDA_DDB = "https://docs.aws.amazon.com/lambda/latest/dg/with-ddb-filtering.html"
_ER = "https://github.com/aws/event-ruler/blob/main/"
ER_README = _ER + "README.md"
ER_RULER_TEST = _ER + "src/test/software/amazon/event/ruler/RulerTest.java"
ER_CORRECTNESS = _ER + "src/test/resources/correctness-cases.json"
ER_COMPILER = _ER + "src/main/software/amazon/event/ruler/JsonRuleCompiler.java"
ER_BYTE_MACHINE = _ER + "src/main/software/amazon/event/ruler/ByteMachine.java"
ER_CIDR = _ER + "src/main/software/amazon/event/ruler/CIDR.java"
ER_CIDR_TEST = _ER + "src/test/software/amazon/event/ruler/CIDRTest.java"
ER_WILDCARD = _ER + "src/main/software/amazon/event/ruler/input/WildcardParser.java"
ER_IGNORE_CASE = _ER + "src/main/software/amazon/event/ruler/input/EqualsIgnoreCaseParser.java"
ER_FINDER = _ER + "src/main/software/amazon/event/ruler/StructuredFinder.java"
ER_NAME_STATE = _ER + "src/main/software/amazon/event/ruler/NameState.java"
ER_EVENT = _ER + "src/main/software/amazon/event/ruler/Event.java"
ER_RANGE = _ER + "src/main/software/amazon/event/ruler/Range.java"
ER_CONSTANTS = _ER + "src/main/software/amazon/event/ruler/Constants.java"
ER_FLOAT64 = "https://github.com/aws/event-ruler/pull/188"
FANOUT_EXTENSION = "docs/filters.md, section 'fanout-numeric' (a fanout extension, not AWS)"

# --- Events ----------------------------------------------------------------------------------

README_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "012345679012",
    "time": "2017-10-02T16:24:49Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
    "detail": {
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
        "instance-id": "i-000000aaaaaa00000",
        "state": "running",
    },
}

RFC_EVENT: dict[str, Any] = {
    "Image": {
        "Width": 800,
        "Height": 600,
        "Title": "View from 15th Floor",
        "Thumbnail": {"Url": "http://www.example.com/image/481989943", "Height": 125, "Width": 100},
        "Animated": False,
        "IDs": [116, 943, 234, 38793],
    }
}

COMPLEX_ARRAYS: dict[str, Any] = {
    "employees": [
        [
            {"firstName": "John", "lastName": "Doe", "ids": [1234, 1000, 9999]},
            {"firstName": "Anna", "lastName": "Smith"},
        ],
        [{"firstName": "Peter", "lastName": "Jones", "ids": []}],
    ]
}

EMPLOYEES: dict[str, Any] = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}

NULL_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "3e3c153a-8339-4e30-8c35-687ebef853fe",
    "detail-type": "EC2 Instance Launch Successful",
    "source": "aws.autoscaling",
    "account": "123456789012",
    "time": "2015-11-11T21:31:47Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {"eventVersion": "", "responseElements": None},
}

LAMBDA_DDB_RECORD: dict[str, Any] = {
    "eventID": "1",
    "eventVersion": "1.0",
    "dynamodb": {
        "ApproximateCreationDateTime": "1678831218.0",
        "Keys": {"CustomerName": {"S": "AnyCompany Industries"}},
        "NewImage": {
            "AccountManager": {"S": "Pat Candella"},
            "PaymentTerms": {"S": "60 days"},
            "CustomerName": {"S": "AnyCompany Industries"},
        },
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_IMAGE",
    },
}


def record(
    event_name: str = "INSERT",
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Lambda DynamoDB event record as fanout hands it to sinks."""
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1700000000,
        "Keys": keys or {"pk": {"S": "order#1"}},
        "SequenceNumber": "100",
        "SizeBytes": 20,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = new
    if old is not None:
        dynamodb["OldImage"] = old
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024",
        "dynamodb": dynamodb,
    }


ORDER = {
    "pk": {"S": "order#1"},
    "status": {"S": "SHIPPED"},
    "n": {"N": "5"},
    "total": {"N": "12345678901234567890123"},
    "gift": {"BOOL": True},
    "note": {"NULL": True},
    "tags": {"SS": ["blue", "red"]},
    "sizes": {"NS": ["5", "7"]},
    "items": {
        "L": [
            {"M": {"sku": {"S": "A1"}, "qty": {"N": "2"}}},
            {
                "M": {
                    "sku": {"S": "B2"},
                    "qty": {"N": "1"},
                    "promo": {"S": "X"},
                    "zone": {"S": "EU"},
                }
            },
        ]
    },
}
SHIPPED = record("MODIFY", new=ORDER, old=dict(ORDER, status={"S": "PAID"}))
INSERTED = record("INSERT", new=ORDER)
REMOVED = record("REMOVE", old=ORDER)


def case(source: str, pattern: Any, event: Any, match: bool) -> dict[str, Any]:
    return {
        "source": source,
        "pattern": copy.deepcopy(pattern),
        "event": copy.deepcopy(event),
        "match": match,
    }


def ddb(new: dict[str, Any]) -> dict[str, Any]:
    """A pattern on the new image: {"dynamodb": {"NewImage": new}}."""
    return {"dynamodb": {"NewImage": new}}


VALID: list[dict[str, Any]] = []
add = VALID.append

# --- Exact matching, structure, AND / OR of values (README, EventBridge pattern syntax) ------

README_RULE = {
    "detail-type": ["EC2 Instance State-change Notification"],
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
    "detail": {"state": ["initializing", "running"]},
}
add(case(ER_README, README_RULE, README_EVENT, True))
add(case(ER_README, dict(README_RULE, detail={"state": ["initializing"]}), README_EVENT, False))
add(
    case(
        ER_README,
        {
            "time": [{"prefix": "2017-10-02"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"anything-but": [100, 200, 300]}],
                "source-ip": [{"cidr": "10.0.0.0/8"}],
            },
        },
        README_EVENT,
        True,
    )
)
add(
    case(
        EB_PATTERN,
        {"source": ["aws.ec2"], "detail": {"state": ["terminated"]}},
        README_EVENT,
        False,
    )
)
add(case(EB_PATTERN, {"source": ["aws.ec2", "aws.fargate"]}, README_EVENT, True))
add(case(EB_PATTERN, {"source": ["aws.fargate"]}, README_EVENT, False))
add(case(EB_PATTERN, {"source": ["aws.ec2"], "missing-field": ["x"]}, README_EVENT, False))
add(case(EB_PATTERN, {"state": ["running"]}, README_EVENT, False))  # wrong nesting
add(case(EB_PATTERN, {"detail": {"state": ["Running"]}}, README_EVENT, False))  # case-sensitive
add(case(EB_PATTERN, {"detail": ["running"]}, README_EVENT, False))  # object is not a value
add(case(EB_PATTERN, {"detail": {"instance-id": ["i-000000aaaaaa00000"]}}, README_EVENT, True))

add(
    case(
        ER_RULER_TEST,
        {"Image": {"Width": [800], "Thumbnail": {"Height": [125, 300]}}},
        RFC_EVENT,
        True,
    )
)
add(case(ER_RULER_TEST, {"Image": {"Thumbnail": {"Url": [{"prefix": "http"}]}}}, RFC_EVENT, True))
add(
    case(
        ER_RULER_TEST,
        {
            "Image": {
                "Width": [{"numeric": ["<", 1000]}],
                "Height": [{"numeric": ["<=", 600]}],
                "Title": [{"anything-but": "View from 15th Flood"}],
                "Thumbnail": {
                    "Url": [{"prefix": "http"}],
                    "Height": [{"numeric": [">", 124, "<", 126]}],
                    "Width": [{"numeric": [">=", 99.999, "<=", 100]}],
                },
                "Animated": [False],
            }
        },
        RFC_EVENT,
        True,
    )
)
for rule in [
    {"Image": {"Width": [{"numeric": ["<", 800]}]}},
    {"Image": {"Height": [{"numeric": ["<", 599]}]}},
    {"Image": {"Title": [{"anything-but": "View from 15th Floor"}]}},
    {"Image": {"Thumbnail": {"Url": [{"prefix": "https"}]}}},
    {"Image": {"Thumbnail": {"Height": [{"numeric": [">", 124, "<", 125]}]}}},
    {"Image": {"Thumbnail": {"Width": [{"numeric": [">=", 100.00001, "<=", 1001]}]}}},
    {"Image": {"Animated": [True]}},
]:
    add(case(ER_RULER_TEST, rule, RFC_EVENT, False))
add(case(ER_RULER_TEST, {"Image": {"IDs": [943]}}, RFC_EVENT, True))

# Really simple rules, and JSON types that must not be confused.
for rule, event, expected in [
    ({"a": [1]}, {"a": 1}, True),
    ({"b": [2]}, {"b": 2}, True),
    ({"x": ["X"]}, {"x": "X"}, True),
    ({"a": [1]}, {"x": True}, False),
    ({"b": [2]}, {"x": True}, False),
    ({"x": ["X"]}, {"x": True}, False),
]:
    add(case(ER_RULER_TEST, rule, event, expected))
for rule, event, expected in [
    ({"x": ["5"]}, {"x": 5}, False),
    ({"x": [5]}, {"x": "5"}, False),
    ({"x": [True]}, {"x": 1}, False),
    ({"x": [1]}, {"x": True}, False),
    ({"x": [False]}, {"x": 0}, False),
    ({"x": [True]}, {"x": True}, True),
    ({"x": [False]}, {"x": False}, True),
    ({"x": ["true"]}, {"x": True}, False),
    ({"x": [3]}, {"x": 3.0}, True),
    ({"x": [3.0]}, {"x": 3}, True),
    ({"x": [300]}, {"x": 3e2}, True),
    ({"x": [3.018e2]}, {"x": 301.8}, True),
    ({"x": [-0.0]}, {"x": 0}, True),
    ({"x": [123456789012]}, {"x": 123456789012}, True),
]:
    add(case(EB_PATTERN, rule, event, expected))

# Null values and empty strings.
add(case(EB_NULL, {"detail": {"eventVersion": [""]}}, NULL_EVENT, True))
add(case(EB_NULL, {"detail": {"responseElements": [None]}}, NULL_EVENT, True))
add(case(EB_NULL, {"detail": {"responseElements": [""]}}, NULL_EVENT, False))
add(case(EB_NULL, {"detail": {"eventVersion": [None]}}, NULL_EVENT, False))
add(case(EB_NULL, {"detail": {"missing": [None]}}, NULL_EVENT, False))
add(case(LAMBDA, {"UserID": [None]}, {"UserID": None}, True))
add(case(LAMBDA, {"LastName": [""]}, {"LastName": ""}, True))
add(
    case(
        LAMBDA,
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Monday"},
        True,
    )
)
add(
    case(
        LAMBDA,
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Friday"},
        False,
    )
)
add(case(LAMBDA, {"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Debit"}, True))
add(case(LAMBDA, {"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Cash"}, False))

# Event fields holding arrays of values.
ARRAY_RULE = {
    "resources": [
        "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f",
    ]
}
add(
    case(
        EB_ARRAYS,
        ARRAY_RULE,
        {
            "resources": [
                "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b:"
                "autoScalingGroupName/ASGTerminate",
                "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
            ]
        },
        True,
    )
)
add(
    case(
        EB_ARRAYS,
        ARRAY_RULE,
        {"resources": ["arn:aws:ec2:us-east-1:999999999999:instance/x"]},
        False,
    )
)
add(case(EB_ARRAYS, ARRAY_RULE, {"resources": []}, False))
add(case(ER_CORRECTNESS, {"tags": ["admin"]}, {"tags": ["user", "admin"]}, True))
add(case(ER_CORRECTNESS, {"tags": ["superadmin"]}, {"tags": ["user", "admin"]}, False))
add(case(ER_EVENT, {"tags": ["a"]}, {"tags": [["b"], ["c", ["a"]]]}, True))

# --- prefix / suffix / equals-ignore-case ----------------------------------------------------

TIME = {"time": [{"prefix": "2017-10-02"}]}
add(case(EB_FILTERING, TIME, {"time": "2017-10-02T18:43:48Z"}, True))
add(case(EB_FILTERING, TIME, {"time": "2017-10-03T18:43:48Z"}, False))
add(case(EB_OPS, {"Region": [{"prefix": "us-"}]}, {"Region": "us-east-1"}, True))
add(case(EB_OPS, {"Region": [{"prefix": "us-"}]}, {"Region": "eu-west-1"}, False))
add(case(ER_README, {"x": [{"prefix": "1"}]}, {"x": 123}, False))  # strings only
add(case(ER_COMPILER, {"x": [{"prefix": ""}]}, {"x": "anything"}, True))
add(case(ER_COMPILER, {"x": [{"prefix": ""}]}, {"x": None}, False))
PREFIX_IC = {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}}
add(case(EB_FILTERING, PREFIX_IC, {"detail": {"service": "EventBridge"}}, True))
add(case(EB_FILTERING, PREFIX_IC, {"detail": {"service": "EVENTBRIDGE"}}, True))
add(case(EB_FILTERING, PREFIX_IC, {"detail": {"service": "events"}}, False))
add(case(EB_FILTERING, {"FileName": [{"suffix": ".png"}]}, {"FileName": "photo.png"}, True))
add(case(EB_FILTERING, {"FileName": [{"suffix": ".png"}]}, {"FileName": "photo.PNG"}, False))
SUFFIX_IC = {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}}
add(case(EB_FILTERING, SUFFIX_IC, {"detail": {"FileName": "photo.PNG"}}, True))
add(case(EB_FILTERING, SUFFIX_IC, {"detail": {"FileName": "photo.pNg"}}, True))
add(case(EB_FILTERING, SUFFIX_IC, {"detail": {"FileName": "photo.jpg"}}, False))
add(case(ER_README, {"x": [{"suffix": "3"}]}, {"x": 123}, False))
add(case(EB_OPS, {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "Alice"}, True))
add(case(EB_OPS, {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, True))
add(case(EB_OPS, {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "Alicia"}, False))
add(case(EB_OPS, {"Name": [{"equals-ignore-case": "5"}]}, {"Name": 5}, False))
EIC_RULE = {
    "a": [{"equals-ignore-case": "aBc"}],
    "b": [{"equals-ignore-case": "Def"}],
    "c": [{"equals-ignore-case": "xyZ"}],
}
for event, expected in [
    ({"a": "ABC", "b": "defx", "c": "xYz", "d": "rst"}, False),
    ({"a": "ABC", "c": "xYz", "d": "rst"}, False),
    ({"a": "ABC", "b": "xYz", "c": "def", "d": "rst"}, False),
    ({"a": "ABC", "b": "def", "c": "xYz", "d": "rst"}, True),
]:
    add(case(ER_RULER_TEST, EIC_RULE, event, expected))
add(case(ER_IGNORE_CASE, {"x": [{"equals-ignore-case": "straße"}]}, {"x": "STRASSE"}, True))
add(case(ER_IGNORE_CASE, {"x": [{"equals-ignore-case": "straße"}]}, {"x": "STRAßE"}, True))
add(case(ER_IGNORE_CASE, {"x": [{"equals-ignore-case": "straße"}]}, {"x": "strasse"}, False))
add(case(ER_IGNORE_CASE, {"x": [{"equals-ignore-case": "été"}]}, {"x": "ÉTÉ"}, True))
add(case(ER_IGNORE_CASE, {"x": [{"prefix": {"equals-ignore-case": "ÉT"}}]}, {"x": "été"}, True))
add(case(ER_IGNORE_CASE, {"x": [{"suffix": {"equals-ignore-case": "ß"}}]}, {"x": "MASS"}, True))
add(case(ER_IGNORE_CASE, {"x": [{"equals-ignore-case": "k"}]}, {"x": "\u212a"}, False))  # Kelvin
add(
    case(
        ER_CORRECTNESS,
        {"d": {"tags": [{"prefix": "ad"}]}},
        {"d": {"tags": ["user", "admin"]}},
        True,
    )
)
add(case(ER_CORRECTNESS, {"d": {"tags": [{"prefix": "super"}]}}, {"d": {"tags": ["admin"]}}, False))
# The ByteMachine compares against the quoted value, so a quote in a prefix/suffix can meet
# the closing/opening quote of the value.
add(case(ER_BYTE_MACHINE, {"x": [{"prefix": 'ab"'}]}, {"x": "ab"}, True))
add(case(ER_BYTE_MACHINE, {"x": [{"suffix": '"ab'}]}, {"x": "ab"}, True))
add(case(ER_BYTE_MACHINE, {"x": [{"prefix": 'ab"'}]}, {"x": "abc"}, False))

# --- anything-but ----------------------------------------------------------------------------

STATE_NOT_INIT = {"detail": {"state": [{"anything-but": "initializing"}]}}
add(case(EB_FILTERING, STATE_NOT_INIT, {"detail": {"state": "running"}}, True))
add(case(EB_FILTERING, STATE_NOT_INIT, {"detail": {"state": "initializing"}}, False))
add(case(EB_FILTERING, STATE_NOT_INIT, {"detail": {}}, False))  # needs the field
X_NOT_123 = {"detail": {"x-limit": [{"anything-but": 123}]}}
add(case(EB_FILTERING, X_NOT_123, {"detail": {"x-limit": 301.8}}, True))
add(case(EB_FILTERING, X_NOT_123, {"detail": {"x-limit": 123}}, False))
add(case(EB_FILTERING, X_NOT_123, {"detail": {"x-limit": 1.23e2}}, False))
NOT_STOPPED = {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}
add(case(EB_FILTERING, NOT_STOPPED, {"detail": {"state": "running"}}, True))
add(case(EB_FILTERING, NOT_STOPPED, {"detail": {"state": "overloaded"}}, False))
NOT_ROUND = {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}
add(case(EB_FILTERING, NOT_ROUND, {"detail": {"x-limit": 301.8}}, True))
add(case(EB_FILTERING, NOT_ROUND, {"detail": {"x-limit": 200}}, False))
NOT_INIT_PREFIX = {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}
add(case(EB_FILTERING, NOT_INIT_PREFIX, {"detail": {"state": "initializing"}}, False))
add(case(EB_FILTERING, NOT_INIT_PREFIX, {"detail": {"state": "running"}}, True))
NOT_PNG = {"FileName": [{"anything-but": {"suffix": ".png"}}]}
add(case(EB_OPS, NOT_PNG, {"FileName": "a.png"}, False))
add(case(EB_OPS, NOT_PNG, {"FileName": "a.jpg"}, True))
NOT_INIT_IC = {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}
add(case(EB_OPS, NOT_INIT_IC, {"state": "INITIALIZING"}, False))
add(case(EB_OPS, NOT_INIT_IC, {"state": "running"}, True))
add(case(EB_OPS, {"s": [{"anything-but": {"equals-ignore-case": ["a", "b"]}}]}, {"s": "B"}, False))
NOT_LIB = {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}
add(case(EB_OPS, NOT_LIB, {"FilePath": "/usr/lib/libc.so"}, False))
add(case(EB_OPS, NOT_LIB, {"FilePath": "/usr/bin/env"}, True))
add(
    case(EB_OPS, {"p": [{"anything-but": {"wildcard": ["*.tmp", "*.bak"]}}]}, {"p": "x.bak"}, False)
)
add(case(EB_OPS, {"p": [{"anything-but": {"prefix": ["tmp/", "cache/"]}}]}, {"p": "src/x"}, True))
ANYTHING_BUT_RULE = {
    "a": [{"anything-but": ["dad0", "dad1", "dad2"]}],
    "b": [{"anything-but": [111, 222, 333]}],
    "c": [{"anything-but": "zdd"}],
    "d": [{"anything-but": 444}],
    "z": [{"numeric": [">", 0, "<", 1]}],
    "w": [{"anything-but": {"prefix": "zax"}}],
}
for event, expected in [
    ({"a": "child1", "b": "444", "c": "child1", "d": 123, "w": "xaz", "z": 0.001}, True),
    ({"a": "dad789", "b": 789, "c": "zdd", "d": 123, "w": "xaz", "z": 0.001}, False),
    ({"a": "dad789", "b": 789, "c": "child1", "d": 123, "w": "xaz", "z": 1.01}, False),
    ({"a": "dad1", "b": 345, "c": "child1", "d": 123, "w": "xaz", "z": 0.001}, False),
    ({"a": "abc", "b": 111, "c": "child1", "d": 123, "w": "xaz", "z": 0.001}, False),
    ({"a": "dad1", "b": 333, "c": "child1", "d": 123, "w": "xaz", "z": 0.001}, False),
    ({"a": "abc", "b": 0, "c": "child1", "d": 444, "w": "xaz", "z": 0.999999}, False),
    ({"a": "child1", "b": "444", "c": "child1", "d": 123, "w": "zaxonie", "z": 0.001}, False),
]:
    add(case(ER_RULER_TEST, ANYTHING_BUT_RULE, event, expected))
# Type handling in the ByteMachine: an anything-but only fails on a value of its own kind.
for rule, event, expected in [
    ({"x": [{"anything-but": "5"}]}, {"x": 5}, True),
    ({"x": [{"anything-but": 5}]}, {"x": "5"}, True),
    ({"x": [{"anything-but": "null"}]}, {"x": None}, True),
    ({"x": [{"anything-but": ["true"]}]}, {"x": True}, True),
    ({"x": [{"anything-but": {"prefix": "1"}}]}, {"x": 123}, True),
    ({"x": [{"anything-but": 5}]}, {"x": 5.0}, False),
    ({"x": [{"anything-but": "a"}]}, {"x": {"y": "b"}}, False),
]:
    add(case(ER_BYTE_MACHINE, rule, event, expected))
add(
    case(
        ER_CORRECTNESS,
        {"d": {"tags": [{"anything-but": "banned"}]}},
        {"d": {"tags": ["banned", "ok"]}},
        True,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"d": {"tags": [{"anything-but": "banned"}]}},
        {"d": {"tags": ["banned"]}},
        False,
    )
)

# --- numeric ---------------------------------------------------------------------------------

C_COUNT = {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}
add(case(ER_README, C_COUNT, README_EVENT, True))
add(case(ER_README, C_COUNT, {"detail": {"c-count": 0}}, False))
add(case(ER_README, C_COUNT, {"detail": {"c-count": 5.000001}}, False))
add(case(ER_README, {"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}}, README_EVENT, True))
add(case(LAMBDA, {"Price": [{"numeric": ["=", 100]}]}, {"Price": 100}, True))
add(case(LAMBDA, {"Price": [{"numeric": ["=", 100]}]}, {"Price": 1e2}, True))
add(case(LAMBDA, {"Price": [{"numeric": ["=", 100]}]}, {"Price": "100"}, False))
PRICE_RANGE = {"Price": [{"numeric": [">", 10, "<=", 20]}]}
add(case(LAMBDA, PRICE_RANGE, {"Price": 20}, True))
add(case(LAMBDA, PRICE_RANGE, {"Price": 10}, False))
add(case(LAMBDA, PRICE_RANGE, {"Price": 10.5}, True))
add(case(EB_OPS, {"n": [{"numeric": [">=", 10, "<", 20]}]}, {"n": 10}, True))
add(case(EB_OPS, {"n": [{"numeric": [">=", 10, "<", 20]}]}, {"n": 20}, False))
add(case(EB_OPS, {"n": [{"numeric": ["<=", 0]}]}, {"n": -0.0}, True))
add(case(EB_OPS, {"n": [{"numeric": ["<", 0]}]}, {"n": -0.0}, False))
add(case(EB_OPS, {"n": [{"numeric": [">", 0]}]}, {"n": True}, False))
add(case(EB_OPS, {"n": [{"numeric": [">", 0]}]}, {"n": None}, False))
add(
    case(
        ER_CORRECTNESS,
        {"d": {"vals": [{"numeric": [">", 0, "<", 10]}]}},
        {"d": {"vals": [100, 5, 200]}},
        True,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"d": {"vals": [{"numeric": [">", 0, "<", 10]}]}},
        {"d": {"vals": [100, 200]}},
        False,
    )
)
add(case(ER_FLOAT64, {"n": [{"numeric": [">", 1e15]}]}, {"n": 2e15}, True))
add(case(ER_FLOAT64, {"n": [{"numeric": ["<", -5e9]}]}, {"n": -6e9}, True))
# DynamoDB numbers arrive as strings: AWS's numeric never matches them.
add(case(EB_FILTERING, ddb({"n": {"N": [{"numeric": [">", 1]}]}}), SHIPPED, False))
add(case(EB_FILTERING, ddb({"n": {"N": ["5"]}}), SHIPPED, True))
add(case(EB_FILTERING, ddb({"n": {"N": ["5.0"]}}), SHIPPED, False))
add(case(LAMBDA_DDB, {"dynamodb": {"SizeBytes": [{"numeric": [">", 10]}]}}, SHIPPED, True))
add(
    case(
        LAMBDA_DDB,
        {"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">=", 1.7e9]}]}},
        SHIPPED,
        True,
    )
)

# --- exists ----------------------------------------------------------------------------------

for rule, event, expected in [
    ({"a": [{"exists": True}]}, {"a": 1}, True),
    ({"b": [{"exists": False}]}, {"a": 1}, True),
    ({"x": [{"exists": True}]}, {"a": 1}, False),
    ({"x": [{"exists": False}]}, {"a": 1}, True),
    ({"a": [{"exists": True}]}, {"b": 2}, False),
    ({"b": [{"exists": False}]}, {"b": 2}, False),
    ({"x": [{"exists": True}]}, {"x": "X"}, True),
    ({"x": [{"exists": False}]}, {"x": "X"}, False),
]:
    add(case(ER_RULER_TEST, rule, event, expected))
C_ABSENT = {"detail": {"c-count": [{"exists": False}]}}
add(case(ER_README, C_ABSENT, {"detail": {"state": "running"}}, True))
add(case(ER_README, C_ABSENT, {"detail": {"c-count": {"c1": 100}}}, True))  # not a leaf
add(
    case(
        ER_README,
        {"detail": {"c-count": [{"exists": True}]}},
        {"detail": {"c-count": {"c1": 100}}},
        False,
    )
)
add(case(ER_README, {"detail": {"c-count": [{"exists": True}]}}, README_EVENT, True))
add(case(LAMBDA, {"ProductName": [{"exists": True}]}, {"ProductName": None}, True))
add(case(LAMBDA, {"ProductName": [{"exists": True}]}, {"ProductName": ""}, True))
add(case(LAMBDA, {"ProductName": [{"exists": False}]}, {"ProductName": None}, False))
add(case(ER_CORRECTNESS, {"d": {"a": [{"exists": True}]}}, {"d": []}, False))
add(case(ER_CORRECTNESS, {"d": {"a": [{"exists": True}]}}, {}, False))
add(case(ER_EVENT, {"tags": [{"exists": False}]}, {"tags": []}, True))
add(case(ER_EVENT, {"tags": [{"exists": True}]}, {"tags": ["a"]}, True))
add(case(ER_EVENT, {"tags": [{"exists": True}]}, {"tags": [{"k": "v"}]}, False))
add(case(ER_COMPILER, {"x": [{"exists": False}, "y"]}, {}, True))
add(case(ER_COMPILER, {"x": [{"exists": False}, "y"]}, {"x": "y"}, True))
add(case(ER_COMPILER, {"x": [{"exists": False}, "y"]}, {"x": "z"}, False))
# On DynamoDB images an attribute is an object ({"S": ...}); exists only sees leaves.
add(case(ER_README, ddb({"status": [{"exists": True}]}), SHIPPED, False))
add(case(ER_README, ddb({"status": {"S": [{"exists": True}]}}), SHIPPED, True))
add(case(ER_README, ddb({"missing": [{"exists": False}]}), SHIPPED, True))
add(
    case(
        ER_README,
        {"dynamodb": {"OldImage": {"status": {"S": [{"exists": False}]}}}},
        INSERTED,
        True,
    )
)
add(
    case(
        ER_README,
        {"dynamodb": {"OldImage": {"status": {"S": [{"exists": False}]}}}},
        SHIPPED,
        False,
    )
)

# --- wildcard --------------------------------------------------------------------------------

BUS = {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]}
add(
    case(
        EB_OPS,
        BUS,
        {"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/default"},
        True,
    )
)
add(
    case(
        EB_OPS,
        BUS,
        {"EventBusArn": "arn:aws:events:eu-west-1:123456789012:event-bus/default"},
        False,
    )
)
PNG_IN_DIR = {"path": [{"wildcard": "dir/*.png"}]}
add(case(ER_README, PNG_IN_DIR, {"path": "dir/a.png"}, True))
add(case(ER_README, PNG_IN_DIR, {"path": "dir/sub/a.png"}, True))
add(case(ER_README, PNG_IN_DIR, {"path": "dir/a.jpg"}, False))
add(case(ER_README, PNG_IN_DIR, {"path": "dir/.png"}, True))
WILDCARD_RULE = {
    "a": [{"wildcard": "*bc"}],
    "b": [{"wildcard": "d*f"}],
    "c": [{"wildcard": "xy*"}],
    "d": [{"wildcard": "xy*"}],
}
for event, expected in [
    ({"a": "abcbc", "b": "deeeefx", "c": "xy", "d": "xyzzz"}, False),
    ({"a": "abcbc", "b": "deeeef", "d": "xyzzz"}, False),
    ({"a": "abcbc", "b": "xy", "c": "deeeef", "d": "xyzzz"}, False),
    ({"a": "abcbc", "b": "deeeef", "c": "xy", "d": "xyzzz"}, True),
]:
    add(case(ER_RULER_TEST, WILDCARD_RULE, event, expected))
add(case(ER_WILDCARD, {"x": [{"wildcard": "a\\*b"}]}, {"x": "a*b"}, True))
add(case(ER_WILDCARD, {"x": [{"wildcard": "a\\*b"}]}, {"x": "axxb"}, False))
add(case(ER_WILDCARD, {"x": [{"wildcard": "a\\\\b*"}]}, {"x": "a\\bcd"}, True))
add(case(ER_WILDCARD, {"x": [{"wildcard": "*"}]}, {"x": ""}, True))
add(case(ER_WILDCARD, {"x": [{"wildcard": "*"}]}, {"x": 5}, False))
add(case(ER_WILDCARD, {"x": [{"wildcard": "*a*a*"}]}, {"x": "banana"}, True))
add(case(ER_WILDCARD, {"x": [{"wildcard": "*a*a*a*a*"}]}, {"x": "banana"}, False))
add(case(ER_WILDCARD, {"x": [{"wildcard": "plain"}]}, {"x": "plain"}, True))

# --- cidr and IP addresses -------------------------------------------------------------------

add(case(ER_README, {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, README_EVENT, True))
add(case(ER_README, {"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}, README_EVENT, False))
add(
    case(
        EB_FILTERING,
        {"sourceIPAddress": [{"cidr": "10.0.0.0/8"}]},
        {"sourceIPAddress": "10.9.8.7"},
        True,
    )
)
add(case(EB_FILTERING, {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"}, True))
add(case(EB_FILTERING, {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False))
add(case(ER_CIDR, {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "::1"}, False))
add(case(ER_CIDR, {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "not an address"}, False))
add(case(ER_CIDR, {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": 10}, False))
add(case(ER_CIDR_TEST, {"ip": [{"cidr": "10.0.0.5/24"}]}, {"ip": "10.0.0.1"}, True))
add(case(ER_CIDR_TEST, {"ip": [{"cidr": "0.0.0.0/0"}]}, {"ip": "255.255.255.255"}, True))
add(case(ER_CIDR, {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "::ffff:a00:1"}, True))
add(case(ER_CIDR, {"ip": ["10.0.0.1"]}, {"ip": "10.0.0.1"}, True))
add(case(ER_CIDR, {"ip": ["::1"]}, {"ip": "0:0:0:0:0:0:0:1"}, True))
add(case(ER_CIDR, {"ip": ["10.0.0.1"]}, {"ip": "10.0.0.2"}, False))

# --- $or -------------------------------------------------------------------------------------

NORMAL_OR = {
    "source": ["aws.cloudwatch"],
    "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {"namespace": ["AWS/EC2", "AWS/ES"]},
    ],
}
add(case(ER_README, NORMAL_OR, {"source": "aws.cloudwatch", "metricName": "ReadLatency"}, True))
add(case(ER_README, NORMAL_OR, {"source": "aws.cloudwatch", "namespace": "AWS/ES"}, True))
add(case(ER_README, NORMAL_OR, {"source": "aws.cloudwatch", "namespace": "AWS/S3"}, False))
add(case(ER_README, NORMAL_OR, {"source": "aws.ec2", "metricName": "ReadLatency"}, False))
PARALLEL_OR = {
    "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
    "detail": {
        "$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm State Change"]}]
    },
}
add(
    case(
        ER_README,
        PARALLEL_OR,
        {"namespace": "AWS/EC2", "detail": {"source": "aws.cloudwatch"}},
        True,
    )
)
add(case(ER_README, PARALLEL_OR, {"namespace": "AWS/EC2", "detail": {"source": "aws.ec2"}}, False))
add(
    case(
        ER_README, PARALLEL_OR, {"detail": {"detail-type": "CloudWatch Alarm State Change"}}, False
    )
)
NESTED_OR = {
    "source": ["aws.cloudwatch"],
    "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {
            "metricType": ["MetricType"],
            "namespace": ["AWS/EC2", "AWS/ES"],
            "$or": [{"metricId": [1234]}, {"spaceId": [1000]}],
        },
        {"scope": ["Service"]},
    ],
}
add(
    case(
        ER_README,
        NESTED_OR,
        {
            "source": "aws.cloudwatch",
            "metricType": "MetricType",
            "namespace": "AWS/EC2",
            "spaceId": 1000,
        },
        True,
    )
)
add(
    case(
        ER_README,
        NESTED_OR,
        {
            "source": "aws.cloudwatch",
            "metricType": "MetricType",
            "namespace": "AWS/EC2",
            "spaceId": 7,
        },
        False,
    )
)
add(case(ER_README, NESTED_OR, {"source": "aws.cloudwatch", "scope": "Service"}, True))
add(case(ER_README, NESTED_OR, {"source": "aws.cloudwatch", "metricId": 1234}, False))
LAMBDA_OR = {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}
add(case(LAMBDA, LAMBDA_OR, {"Location": "Boston", "Day": "Monday"}, True))
add(case(LAMBDA, LAMBDA_OR, {"Location": "Boston", "Day": "Friday"}, False))
add(
    case(
        EB_OPS,
        {"detail": {"$or": [{"c-count": [{"numeric": [">", 10]}]}, {"d-count": [3]}]}},
        README_EVENT,
        True,
    )
)

# --- Arrays of objects: array consistency ----------------------------------------------------

add(case(ER_README, {"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True))
add(case(ER_README, {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, EMPLOYEES, True))
add(
    case(ER_README, {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, EMPLOYEES, False)
)
for rule, expected in [
    ({"employees": {"firstName": ["Anna"]}}, True),
    ({"employees": {"firstName": ["John"], "ids": [1000]}}, True),
    ({"employees": {"firstName": ["Anna"], "ids": [{"exists": False}]}}, True),
    ({"employees": {"firstName": ["Alice"]}}, False),
    ({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, False),
    ({"employees": {"firstName": ["Alice"], "lastName": ["Bob"]}}, False),
    ({"a": ["b"]}, False),
    ({"employees": ["b"]}, False),
    ({"employees": {"firstName": ["Anna"], "ids": [1000]}}, False),
    ({"employees": {"firstName": ["Anna"], "ids": [{"exists": True}]}}, False),
]:
    add(case(ER_RULER_TEST, rule, COMPLEX_ARRAYS, expected))
BOTH_EXIST = {"d": {"a": [{"exists": True}], "b": [{"exists": True}]}}
for event, expected in [
    ({"d": {"a": 1, "b": 2}}, True),
    ({"d": {"a": 1}}, False),
    ({"d": [{"a": 1, "b": 2}]}, True),
    ({"d": [{"a": 1}, {"b": 2}]}, False),
    ({"d": [{"a": 1}, {"b": 2}, {"a": 3, "b": 4}]}, True),
]:
    add(case(ER_CORRECTNESS, BOTH_EXIST, event, expected))
add(
    case(
        ER_CORRECTNESS,
        {"d": {"name": ["alice"], "status": ["active"]}},
        {"d": [{"name": "alice"}, {"status": "active"}]},
        False,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"u": {"t": {"k": ["color"], "v": ["blue"]}}},
        {"u": [{"t": [{"k": "color", "v": "blue"}]}]},
        True,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"u": {"t": {"k": ["color"], "v": ["blue"]}}},
        {"u": [{"t": [{"k": "color"}, {"v": "blue"}]}]},
        False,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"d": {"name": [{"exists": True}], "info": {"x": ["1"]}}},
        {"d": [{"name": "alice"}, {"info": {"x": "1"}}]},
        False,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"i": {"p": [{"numeric": [">", 0, "<", 100]}], "n": [{"exists": True}]}},
        {"i": [{"n": "w", "p": 50}, {"n": "g", "p": 200}]},
        True,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"u": {"s": [{"anything-but": "banned"}], "n": [{"exists": True}]}},
        {"u": [{"n": "alice", "s": "banned"}, {"n": "bob", "s": "active"}]},
        True,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"detail": {"email": [{"exists": True}], "name": [{"exists": True}]}},
        {"detail": [{"email": "a@x"}, {"email": "b@x"}, {"email": "e@x", "name": "eve"}]},
        True,
    )
)
add(
    case(
        ER_CORRECTNESS,
        {"users": {"name": [{"exists": True}], "email": [{"exists": True}]}, "tags": ["admin"]},
        {"users": [{"name": "alice"}, {"email": "b@x"}], "tags": ["admin"]},
        False,
    )
)
EXISTS_FALSE_IN_ARRAY = {"d": {"a": [{"exists": True}], "b": [{"exists": False}]}}
add(case(ER_CORRECTNESS, EXISTS_FALSE_IN_ARRAY, {"d": [{"a": 1}]}, True))
add(case(ER_CORRECTNESS, EXISTS_FALSE_IN_ARRAY, {"d": [{"a": 1, "b": 2}]}, False))
add(case(ER_CORRECTNESS, EXISTS_FALSE_IN_ARRAY, {"d": [{"a": 1, "b": 2}, {"a": 3}]}, True))
# exists:false under an array is checked in field-name order (NameState.getNameTransitions):
# when it sorts before the fields that pick the element, any element holding it counts.
add(
    case(
        ER_NAME_STATE,
        {"d": {"a": [{"exists": False}], "b": ["x"]}},
        {"d": [{"a": 1, "b": "y"}, {"b": "x"}]},
        False,
    )
)
add(
    case(
        ER_FINDER,
        {"d": {"z": [{"exists": False}], "b": ["x"]}},
        {"d": [{"z": 1, "b": "y"}, {"b": "x"}]},
        True,
    )
)

# --- DynamoDB records ------------------------------------------------------------------------

add(
    case(
        LAMBDA_DDB,
        {"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}},
        LAMBDA_DDB_RECORD,
        True,
    )
)
ACCOUNT_MANAGER = ddb({"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}})
add(case(LAMBDA_DDB, ACCOUNT_MANAGER, LAMBDA_DDB_RECORD, True))
add(
    case(
        LAMBDA_DDB, ddb({"AccountManager": {"S": ["Shirley Rodriguez"]}}), LAMBDA_DDB_RECORD, False
    )
)
add(case(LAMBDA_DDB, ddb({"PaymentTerms": {"S": [{"prefix": "60"}]}}), LAMBDA_DDB_RECORD, True))
STATUS_INSERT = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}}}
add(case(LAMBDA_DDB, STATUS_INSERT, INSERTED, True))
add(case(LAMBDA_DDB, STATUS_INSERT, SHIPPED, False))
add(case(LAMBDA_DDB, STATUS_INSERT, REMOVED, False))
add(
    case(
        LAMBDA_DDB,
        {"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"status": {"S": ["SHIPPED"]}}}},
        REMOVED,
        True,
    )
)
add(case(LAMBDA_DDB, {"dynamodb": {"OldImage": {"status": {"S": ["PAID"]}}}}, SHIPPED, True))
add(case(LAMBDA_DDB, {"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "order#"}]}}}}, SHIPPED, True))
add(case(LAMBDA_DDB, ddb({"gift": {"BOOL": [True]}}), SHIPPED, True))
add(case(LAMBDA_DDB, ddb({"gift": {"BOOL": [False]}}), SHIPPED, False))
add(case(LAMBDA_DDB, ddb({"note": {"NULL": [True]}}), SHIPPED, True))
add(case(LAMBDA_DDB, ddb({"tags": {"SS": ["red"]}}), SHIPPED, True))
add(case(LAMBDA_DDB, ddb({"tags": {"SS": ["green"]}}), SHIPPED, False))
add(case(LAMBDA_DDB, ddb({"sizes": {"NS": ["7"]}}), SHIPPED, True))
add(
    case(
        EB_ARRAYS,
        ddb({"items": {"L": {"M": {"sku": {"S": ["B2"]}, "qty": {"N": ["1"]}}}}}),
        SHIPPED,
        True,
    )
)
add(
    case(
        EB_ARRAYS,
        ddb({"items": {"L": {"M": {"sku": {"S": ["A1"]}, "qty": {"N": ["1"]}}}}}),
        SHIPPED,
        False,
    )
)
# exists:false inside a list of maps: "...M.sku.S" sorts before "...M.zone.S", so the sku picks
# the element first; "...M.promo.S" sorts before it, so any element with a promo counts.
add(
    case(
        ER_FINDER,
        ddb({"items": {"L": {"M": {"sku": {"S": ["A1"]}, "zone": {"S": [{"exists": False}]}}}}}),
        SHIPPED,
        True,
    )
)
add(
    case(
        ER_FINDER,
        ddb({"items": {"L": {"M": {"sku": {"S": ["B2"]}, "zone": {"S": [{"exists": False}]}}}}}),
        SHIPPED,
        False,
    )
)
add(
    case(
        ER_NAME_STATE,
        ddb({"items": {"L": {"M": {"sku": {"S": ["A1"]}, "promo": {"S": [{"exists": False}]}}}}}),
        SHIPPED,
        False,
    )
)
add(
    case(
        ER_README,
        ddb({"items": {"L": {"M": {"sku": {"S": ["B2"]}, "promo": [{"exists": False}]}}}}),
        SHIPPED,
        True,
    )
)

# --- fanout-numeric (fanout's opt-in extension for DynamoDB "N" strings) -----------------------

for rule, event, expected in [
    (ddb({"n": {"N": [{"fanout-numeric": [">", 1]}]}}), SHIPPED, True),
    (ddb({"n": {"N": [{"fanout-numeric": [">", 5]}]}}), SHIPPED, False),
    (ddb({"n": {"N": [{"fanout-numeric": ["=", 5]}]}}), SHIPPED, True),
    (ddb({"n": {"N": [{"fanout-numeric": [">=", 5, "<", 6]}]}}), SHIPPED, True),
    (ddb({"n": {"N": [{"fanout-numeric": ["=", 5]}]}}), record(new={"n": {"N": "5.00"}}), True),
    (ddb({"n": {"N": [{"fanout-numeric": ["=", 500]}]}}), record(new={"n": {"N": "5E2"}}), True),
    (ddb({"total": {"N": [{"fanout-numeric": ["<", "12345678901234567890124"]}]}}), SHIPPED, True),
    (ddb({"total": {"N": [{"fanout-numeric": ["<", "12345678901234567890123"]}]}}), SHIPPED, False),
    (ddb({"sizes": {"NS": [{"fanout-numeric": [">", 6]}]}}), SHIPPED, True),
    (ddb({"pk": {"S": [{"fanout-numeric": [">", 0]}]}}), SHIPPED, False),
    ({"dynamodb": {"SizeBytes": [{"fanout-numeric": ["<", 100]}]}}, SHIPPED, True),
    (ddb({"gift": {"BOOL": [{"fanout-numeric": [">", 0]}]}}), SHIPPED, False),
]:
    add(case(FANOUT_EXTENSION, rule, event, expected))

# --- Pasted forms ----------------------------------------------------------------------------

add(
    case(
        LAMBDA_DDB,
        '{ "dynamodb" : { "Keys" : { "CustomerName" : { "S" : [ "AnyCompany Industries" ] } } } }',
        LAMBDA_DDB_RECORD,
        True,
    )
)
add(case(LAMBDA, {"Pattern": '{"eventVersion": ["1.0"]}'}, LAMBDA_DDB_RECORD, True))
add(case(LAMBDA, {"Pattern": '{"eventVersion": ["1.1"]}'}, LAMBDA_DDB_RECORD, False))


# --- Invalid patterns ------------------------------------------------------------------------


def bad(source: str, pattern: Any, path: str, words: str = "") -> dict[str, Any]:
    return {"source": source, "pattern": pattern, "path": path, "words": words}


INVALID: list[dict[str, Any]] = [
    bad(ER_COMPILER, {"eventName": "INSERT"}, "filters[0].eventName", "array"),
    bad(ER_COMPILER, {"a": 5}, "filters[0].a", "array"),
    bad(ER_COMPILER, {"a": None}, "filters[0].a", "array"),
    bad(ER_COMPILER, {"a": True}, "filters[0].a", "array"),
    bad(ER_COMPILER, {"a": []}, "filters[0].a", "empty arrays"),
    bad(ER_COMPILER, {"a": {}}, "filters[0].a", "empty objects"),
    bad(ER_COMPILER, {}, "filters[0]", "empty objects"),
    bad(ER_COMPILER, ["x"], "filters[0]", "object"),
    bad(ER_COMPILER, {"a": [["x"]]}, "filters[0].a[0]", "match values"),
    bad(ER_COMPILER, {"a": [{"contains": "x"}]}, "filters[0].a[0].contains", "unknown operator"),
    bad(ER_COMPILER, {"a": [{"prefix": "a", "suffix": "b"}]}, "filters[0].a[0]", "exactly one"),
    bad(ER_COMPILER, {"a": [{}]}, "filters[0].a[0]", "one operator"),
    bad(ER_COMPILER, {"a": [{"prefix": 5}]}, "filters[0].a[0].prefix", "string"),
    bad(
        ER_COMPILER,
        {"a": [{"prefix": {"wildcard": "x"}}]},
        "filters[0].a[0].prefix",
        "equals-ignore-case",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"suffix": {"equals-ignore-case": 5}}]},
        "filters[0].a[0].suffix.equals-ignore-case",
        "string",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"equals-ignore-case": ["x"]}]},
        "filters[0].a[0].equals-ignore-case",
        "string",
    ),
    bad(ER_COMPILER, {"a": [{"exactly": 5}]}, "filters[0].a[0].exactly", "string"),
    bad(ER_COMPILER, {"a": [{"numeric": 5}]}, "filters[0].a[0].numeric", "array"),
    bad(ER_COMPILER, {"a": [{"numeric": []}]}, "filters[0].a[0].numeric", "empty"),
    bad(ER_COMPILER, {"a": [{"numeric": [">", "5"]}]}, "filters[0].a[0].numeric[1]", "number"),
    bad(ER_COMPILER, {"a": [{"numeric": [">", True]}]}, "filters[0].a[0].numeric[1]", "number"),
    bad(ER_COMPILER, {"a": [{"numeric": ["!=", 5]}]}, "filters[0].a[0].numeric[0]", "operator"),
    bad(ER_COMPILER, {"a": [{"numeric": [5, ">"]}]}, "filters[0].a[0].numeric[0]", "operator"),
    bad(
        ER_RANGE, {"a": [{"numeric": [">", 10, "<", 5]}]}, "filters[0].a[0].numeric", "empty range"
    ),
    bad(
        ER_RANGE, {"a": [{"numeric": [">=", 5, "<=", 5]}]}, "filters[0].a[0].numeric", "empty range"
    ),
    bad(
        ER_COMPILER,
        {"a": [{"numeric": ["<", 5, ">", 0]}]},
        "filters[0].a[0].numeric[2]",
        "lower bound",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"numeric": [">", 0, ">", 5]}]},
        "filters[0].a[0].numeric[2]",
        "upper bound",
    ),
    bad(ER_COMPILER, {"a": [{"numeric": ["=", 5, 6]}]}, "filters[0].a[0].numeric[2]", "too many"),
    bad(ER_COMPILER, {"a": [{"numeric": [">"]}]}, "filters[0].a[0].numeric", "needs a number"),
    bad(ER_COMPILER, {"a": [{"anything-but": []}]}, "filters[0].a[0].anything-but", "at least one"),
    bad(ER_COMPILER, {"a": [{"anything-but": ["a", 1]}]}, "filters[0].a[0].anything-but", "mix"),
    bad(ER_COMPILER, {"a": [{"anything-but": None}]}, "filters[0].a[0].anything-but", "null"),
    bad(ER_COMPILER, {"a": [{"anything-but": True}]}, "filters[0].a[0].anything-but", "true"),
    bad(
        ER_COMPILER,
        {"a": [{"anything-but": ["a", None]}]},
        "filters[0].a[0].anything-but[1]",
        "null",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"anything-but": {"prefix": ""}}]},
        "filters[0].a[0].anything-but.prefix",
        "empty",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"anything-but": {"suffix": 5}}]},
        "filters[0].a[0].anything-but.suffix",
        "string",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"anything-but": {"numeric": [">", 1]}}]},
        "filters[0].a[0].anything-but.numeric",
        "unsupported",
    ),
    bad(
        ER_COMPILER,
        {"a": [{"anything-but": {"equals-ignore-case": []}}]},
        "filters[0].a[0].anything-but.equals-ignore-case",
        "at least one",
    ),
    bad(
        ER_WILDCARD,
        {"a": [{"anything-but": {"wildcard": ["ok*", "a**"]}}]},
        "filters[0].a[0].anything-but.wildcard[1]",
        "consecutive",
    ),
    bad(ER_COMPILER, {"a": [{"exists": "true"}]}, "filters[0].a[0].exists", "true or false"),
    bad(ER_CIDR, {"a": [{"cidr": "10.0.0.0"}]}, "filters[0].a[0].cidr", "'/'"),
    bad(ER_CIDR, {"a": [{"cidr": "10.0.0.0/abc"}]}, "filters[0].a[0].cidr", "integer"),
    bad(ER_CIDR, {"a": [{"cidr": "10.0.0.0/-1"}]}, "filters[0].a[0].cidr", "negative"),
    bad(ER_CIDR, {"a": [{"cidr": "10.0.0.0/32"}]}, "filters[0].a[0].cidr", "< 32"),
    bad(ER_CIDR, {"a": [{"cidr": "::/128"}]}, "filters[0].a[0].cidr", "< 128"),
    bad(ER_CIDR_TEST, {"a": [{"cidr": "700.168.0.1/8"}]}, "filters[0].a[0].cidr", "address"),
    bad(ER_CIDR, {"a": [{"cidr": "10.0.0.0/8/8"}]}, "filters[0].a[0].cidr", "'/'"),
    bad(ER_WILDCARD, {"a": [{"wildcard": "a**b"}]}, "filters[0].a[0].wildcard", "consecutive"),
    bad(ER_WILDCARD, {"a": [{"wildcard": "a\\b"}]}, "filters[0].a[0].wildcard", "escape"),
    bad(ER_WILDCARD, {"a": [{"wildcard": "a\\"}]}, "filters[0].a[0].wildcard", "escape"),
    bad(ER_COMPILER, {"$or": {"a": ["x"]}}, "filters[0].$or", "array"),
    bad(ER_COMPILER, {"$or": [{"a": ["x"]}]}, "filters[0].$or", "at least 2"),
    bad(ER_COMPILER, {"$or": [{"a": ["x"]}, "b"]}, "filters[0].$or[1]", "objects"),
    bad(ER_COMPILER, {"$or": [{"a": ["x"]}, {}]}, "filters[0].$or[1]", "empty objects"),
    bad(
        ER_CONSTANTS,
        {"$or": [{"numeric": ["x"]}, {"a": ["y"]}]},
        "filters[0].$or[0].numeric",
        "reserved",
    ),
    bad(
        ER_CONSTANTS,
        {"$or": [{"a": {"prefix": ["x"]}}, {"b": ["y"]}]},
        "filters[0].$or[0].a.prefix",
        "reserved",
    ),
    bad(
        ER_COMPILER,
        {"a": ["x"], "$or": [{"a": ["y"]}, {"b": ["z"]}]},
        "filters[0].$or[0].a",
        "already",
    ),
    bad(ER_COMPILER, {"a": {"b": ["x"]}, "a.b": ["y"]}, 'filters[0]["a.b"]', "already"),
    bad(
        FANOUT_EXTENSION,
        {"a": [{"fanout-numeric": [">", "abc"]}]},
        "filters[0].a[0].fanout-numeric[1]",
        "number",
    ),
    bad(
        FANOUT_EXTENSION,
        {"a": [{"fanout-numeric": [">", "9", "<", "1"]}]},
        "filters[0].a[0].fanout-numeric",
        "empty range",
    ),
    bad(
        LAMBDA_DDB,
        {"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", "5"]}]}}}},
        "filters[0].dynamodb.NewImage.n.N[0].numeric[1]",
        "quoted number",
    ),
    bad(LAMBDA, "{not json", "filters[0]", "JSON"),
    bad(LAMBDA, {"Pattern": '{"a": "b"}'}, "filters[0].Pattern.a", "array"),
]
