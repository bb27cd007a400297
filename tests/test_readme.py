"""The README's quickstart, followed literally in a new app, works."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from flask_login import UserMixin, login_user

from flask_toucan.testing import FakeToucan, decode_fake_token

from .markup import start_tags
from .servers import ROOT


def code_blocks(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_quickstart_builds_and_renders_for_a_signed_in_user(
    tmp_path: Path, fake_toucan: FakeToucan
) -> None:
    (python,) = code_blocks("python")
    (template,) = code_blocks("jinja")
    (tmp_path / "quickstart_app.py").write_text(python)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "analytics.html").write_text(template)
    spec = importlib.util.spec_from_file_location("quickstart_app", tmp_path / "quickstart_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quickstart_app"] = module
    try:
        spec.loader.exec_module(module)
        app = module.create_app(
            {
                "SECRET_KEY": "test",
                "TOUCAN_BASE_URL": fake_toucan.url,
                "TOUCAN_API_KEY": fake_toucan.api_key,
            }
        )
    finally:
        del sys.modules["quickstart_app"]

    # What "your app's sign-in, as you already have it" provides:
    class Member(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id, self.tenant_id = user_id, 7

    module.login_manager.user_loader(Member)

    @app.get("/test-sign-in")
    def sign_in() -> Any:
        login_user(Member("42"))
        return "ok"

    client = app.test_client()
    assert client.get("/analytics").status_code == 401  # Flask-Login has no login view set
    client.get("/test-sign-in")
    page = client.get("/analytics")
    assert page.status_code == 200
    found = {tag: attrs for tag, attrs in start_tags(page.text)}
    claims = decode_fake_token(str(found["tc-dashboard"]["auth-token"]))
    assert claims["sub"] == "42"
    assert claims["attributes"] == {"tenant_id": 7}
    assert found["tc-dashboard"]["data-theme"] == "dark"
    assert "tc-ai-assistant" in found
    assert fake_toucan.mints[0].json["user"]["attributes"] == {"tenant_id": 7}


def test_the_testing_snippets_run_as_written(tmp_path: Path, fake_toucan: FakeToucan) -> None:
    """The README's and the testing guide's test of the quickstart app: the sign-in step
    included, they pass as written."""
    (python,) = code_blocks("python")
    (template,) = code_blocks("jinja")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "analytics.html").write_text(template)
    readme = (ROOT / "README.md").read_text()
    testing = readme.split("## Testing your app", 1)[1].split("\n## ", 1)[0]
    guide = (ROOT / "docs" / "guides" / "testing.md").read_text()
    snippets = [re.findall(r"```python\n(.*?)```", text, re.S)[0] for text in (testing, guide)]
    for index, snippet in enumerate(snippets):
        (tmp_path / f"app_{index}.py").write_text(python)
        spec = importlib.util.spec_from_file_location(f"app_{index}", tmp_path / f"app_{index}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"app_{index}"] = module  # Flask finds the templates beside it
        try:
            spec.loader.exec_module(module)

            class Member(UserMixin):
                def __init__(self, user_id: str) -> None:
                    self.id, self.tenant_id = user_id, 7

            module.login_manager.user_loader(Member)  # the app's own, as it already has it
            namespace: dict[str, Any] = {"create_app": module.create_app}
            exec(snippet.replace("    ...\n", "    pass\n"), namespace)
            fake_toucan.reset()
            namespace["test_analytics_page"](fake_toucan)
        finally:
            del sys.modules[f"app_{index}"]
        assert len(fake_toucan.mints) == 1
