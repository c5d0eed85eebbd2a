"""The worked ERP -> shop example in docs/transformers.md must do what the page says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from crossdock.errors import RecordFiltered, RecordRejected
from crossdock.transform import compile_steps

DOC = Path(__file__).parents[3] / "docs" / "transformers.md"


def blocks(kind: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Worked example") :]
    return re.findall(rf"```{kind}\n(.*?)```", section, re.DOTALL)


def test_worked_example() -> None:
    erp, result = (json.loads(b) for b in blocks("json"))
    config = yaml.safe_load(blocks("yaml")[0])
    pipeline = compile_steps([{"use": "erp-to-shop"}], named=config["transformers"])
    assert pipeline.apply(erp) == [result]
    with pytest.raises(RecordFiltered, match="Status == 'A'"):
        pipeline.apply({**erp, "Status": "I"})
    with pytest.raises(RecordRejected) as err:
        pipeline.apply({**erp, "VK": "abc"})
    assert err.value.message == "step erp-to-shop > 4 (convert): cannot convert price_cents ('abc', str) to cents"
