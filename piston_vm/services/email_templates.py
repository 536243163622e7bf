"""The voicemail_new email's templates: the bundled files, the operator's files over them, and an
account's own templates over both (docs/email.md, "Templates")."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from piston_vm.core.mail import Rendered

log = logging.getLogger(__name__)

# File names, and the keys of an account's template document (docs/email.md).
PARTS = {"subject": "voicemail_new.subject.txt", "text": "voicemail_new.txt",
         "html": "voicemail_new.html"}
# Compiled account templates kept per process; accounts rarely have more than one version.
MAX_CACHED_SOURCES = 256


class EmailTemplates:
    """Renders the three parts. Everything runs in Jinja2's sandbox: account templates are data
    from CouchDB, and must not reach Python internals."""

    def __init__(self, operator_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if operator_dir is not None:
            if not operator_dir.is_dir():
                raise ValueError(f"PISTON_VM_EMAIL_TEMPLATES_DIR: {operator_dir} is not a "
                                 "directory")
            loaders.append(jinja2.FileSystemLoader(operator_dir))
        loaders.append(jinja2.PackageLoader("piston_vm", "templates/email"))
        loader = jinja2.ChoiceLoader(loaders)
        # HTML is escaped, subject and text are not (a caller named "A&B" stays "A&B").
        self._plain = SandboxedEnvironment(loader=loader, autoescape=False,
                                           keep_trailing_newline=True)
        self._html = SandboxedEnvironment(loader=loader, autoescape=True,
                                          keep_trailing_newline=True)
        # Broken operator files fail at start, not on the first voicemail.
        self._files = {part: self._env(part).get_template(name) for part, name in PARTS.items()}
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}

    def _env(self, part: str) -> SandboxedEnvironment:
        return self._html if part == "html" else self._plain

    def render(self, context: Mapping[str, Any],
               account_templates: Mapping[str, Any] | None = None) -> Rendered:
        parts = {part: self._render_part(part, context, account_templates)
                 for part in PARTS}
        return Rendered(parts["subject"], parts["text"], parts["html"])

    def _render_part(self, part: str, context: Mapping[str, Any],
                     account_templates: Mapping[str, Any] | None) -> str:
        source = (account_templates or {}).get(part)
        if isinstance(source, str) and source.strip():
            try:
                return self._compile(part, source).render(context)
            except jinja2.TemplateError as exc:
                # The voicemail still gets out, with the operator's wording.
                log.warning("the account's %s template fails (%s): using the default", part, exc)
        return self._files[part].render(context)

    def _compile(self, part: str, source: str) -> jinja2.Template:
        key = (part, source)
        template = self._compiled.get(key)
        if template is None:
            if len(self._compiled) >= MAX_CACHED_SOURCES:
                self._compiled.clear()
            template = self._env(part).from_string(source)
            self._compiled[key] = template
        return template
