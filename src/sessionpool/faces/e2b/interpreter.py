"""The code interpreter (port 49999): ``/execute`` streaming line-delimited JSON, and contexts.

``POST /execute`` answers one JSON object per line as the cell runs: ``stdout`` / ``stderr``
(text and a timestamp in nanoseconds, as written), then ``result`` objects (display() outputs
and figures, then the last expression's value with ``is_main_result``), an ``error``,
``number_of_executions`` and ``end_of_execution``. A client that goes away (the SDK's
``timeout`` ends the request) interrupts its cell.

Contexts: the default context is the sandbox's own session. A created context of the sandbox's
own language (Python) is a namespace in that session's kernel: its own variables, imports and
execution count, the sandbox's files, processes and environment, as in E2B. Its ``cwd`` is
entered with ``os.chdir``, which is process-wide: it moves every context of the sandbox. A
context of another language (JavaScript beside a Python sandbox, or the reverse) is a session of
its own in a pool that runs it, with files of its own. Bash runs as a shell command in the
default context's session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sessionpool import errors
from sessionpool.faces.base import require
from sessionpool.faces.e2b.answers import error, json_body, service_error
from sessionpool.faces.e2b.routing import FACE_KEY, current_sandbox
from sessionpool.faces.e2b.sandboxes import Context, Sandbox
from sessionpool.faces.http import HttpError, describe_validation
from sessionpool.pool import SessionHandle
from sessionpool.tenancy import SEPARATOR, Scope
from sessionpool.types import DisplayData, ExecutionResult, ExecutionStatus

if TYPE_CHECKING:
    from sessionpool.faces.e2b.face import E2bFace

DEFAULT_CONTEXT = "default"
#: where a session's code starts
SESSION_CWD = "/mnt/data"
_PYTHON = ("python", "python3")
_JAVASCRIPT = ("javascript", "js", "typescript", "ts", "node", "nodejs")
_BASH = ("bash", "sh")

#: MIME type -> the SDK's ``Result`` field; binary types are sent base64
_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    context_id: str | None = None
    language: str | None = None
    env_vars: dict[str, str] | None = None


class ContextBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    language: str | None = None
    cwd: str | None = None


def _face(request: Request) -> E2bFace:
    face = request.scope.get(FACE_KEY)
    assert face is not None
    return face  # type: ignore[no-any-return]


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await json_body(request)
    try:
        return model.model_validate(json.loads(raw) if raw.strip() else {})
    except ValueError as exc:
        detail = describe_validation(exc.errors()) if isinstance(exc, ValidationError) else ""
        raise HttpError(400, "BadRequest", detail or "the body is not JSON") from None


def _kind(language: str | None) -> str | None:
    """The runtime kind a language names (None: the default context's)."""
    if language is None or language == "":
        return None
    lang = language.lower()
    if lang in _PYTHON:
        return "python"
    if lang in _JAVASCRIPT:
        return "node"
    if lang in _BASH:
        return "bash"
    raise HttpError(
        400,
        "BadRequest",
        f"language {language!r} is not supported by this server: python, javascript (in a "
        "pool whose runtime is Node.js) or bash",
    )


def default_context(sandbox: Sandbox, kind: str) -> Context:
    return Context(DEFAULT_CONTEXT, _language(kind), SESSION_CWD, sandbox.pool, sandbox.session_key)


def _language(kind: str) -> str:
    return "javascript" if kind == "node" else "python"


def _env_code(kind: str, env: dict[str, str]) -> str:
    if kind == "node":
        return f"Object.assign(process.env, {json.dumps(env)}); undefined"
    return f"import os as __e2b_os; __e2b_os.environ.update({json.dumps(env)}); del __e2b_os"


def _env_for_one_cell(kind: str, env: dict[str, str]) -> tuple[str, str]:
    """Code that sets ``env`` for one cell, and code that puts back what was there before."""
    names = json.dumps(sorted(env))
    if kind == "node":
        return (
            f"globalThis.__e2bSaved = Object.fromEntries({names}.map(k => [k, process.env[k]]));"
            f" Object.assign(process.env, {json.dumps(env)}); undefined",
            "for (const [k, v] of Object.entries(globalThis.__e2bSaved)) "
            "{ if (v === undefined) delete process.env[k]; else process.env[k] = v; } undefined",
        )
    return (
        f"import os as __e2b_os; __e2b_saved = {{k: __e2b_os.environ.get(k) for k in {names}}};"
        f" __e2b_os.environ.update({json.dumps(env)}); del __e2b_os",
        "import os as __e2b_os\nfor __e2b_k, __e2b_v in __e2b_saved.items():\n"
        "    if __e2b_v is None: __e2b_os.environ.pop(__e2b_k, None)\n"
        "    else: __e2b_os.environ[__e2b_k] = __e2b_v\n"
        "del __e2b_os, __e2b_saved, __e2b_k, __e2b_v",
    )


async def prepare(session: SessionHandle, sandbox: Sandbox, kind: str, cwd: str = "") -> None:
    """A new session of ``sandbox``: its environment variables applied (and ``cwd`` entered)."""
    if sandbox.env_vars:
        await _quiet(session, _env_code(kind, sandbox.env_vars))
    await _enter(session, kind, cwd)


async def _enter(session: SessionHandle, kind: str, cwd: str, namespace: str | None = None) -> None:
    if cwd and cwd != SESSION_CWD:
        if kind == "node":
            code = f"process.chdir({json.dumps(cwd)}); undefined"
        else:
            code = f"import os as __e2b_os; __e2b_os.chdir({json.dumps(cwd)}); del __e2b_os"
        await _quiet(session, code, f"cwd {cwd!r}", namespace)


async def _quiet(
    session: SessionHandle, code: str, what: str = "", namespace: str | None = None
) -> None:
    res = await session.execute(code, context=namespace)
    if res.error is not None and what:
        raise HttpError(400, "BadRequest", f"{what}: {res.error.ename}: {res.error.evalue}")


def _resolve(face: E2bFace, sandbox: Sandbox, body: ExecuteBody) -> tuple[Context, str]:
    """The context a cell runs in, and the runtime kind it runs with."""
    if body.context_id:
        ctx = sandbox.contexts.get(body.context_id)
        if ctx is None:
            raise HttpError(404, "NotFound", f"context {body.context_id!r} not found")
        return ctx, face.kind_of(ctx.pool)
    default = sandbox.contexts[DEFAULT_CONTEXT]
    own = face.kind_of(default.pool)
    kind = _kind(body.language)
    if kind is None or kind == own:
        return default, own
    if kind == "bash":
        return default, "bash"
    # a language the sandbox's pool does not run: its own default context in a pool that does
    ctx_id = f"default-{_language(kind)}"
    ctx = sandbox.contexts.get(ctx_id)
    if ctx is None:
        pool = face.pool_for_kind(kind, sandbox)
        ctx = Context(ctx_id, _language(kind), SESSION_CWD, pool, _ctx_key(sandbox, ctx_id))
        sandbox.contexts[ctx_id] = ctx
    return ctx, kind


def _ctx_key(sandbox: Sandbox, ctx_id: str) -> str:
    return f"{sandbox.session_key}{SEPARATOR}{ctx_id}"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _result(display: DisplayData, main: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "result", "is_main_result": main}
    extra: dict[str, Any] = {}
    for mime, value in display.data.items():
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        name = _FIELDS.get(mime)
        if name == "json" and isinstance(text, str):
            try:
                out[name] = json.loads(text)
            except ValueError:
                out[name] = text
        elif name is not None:
            out[name] = text
        else:
            extra[mime] = text  # every MIME type the kernel produced reaches the client
    if extra:
        out["extra"] = extra
    return out


def _outcome(res: ExecutionResult) -> list[dict[str, Any]]:
    """What follows the streamed output: results (displays, then the main one), the error."""
    out = [_result(d, False) for d in res.displays]
    if res.result is not None:
        out.append(_result(res.result, True))
    if res.error is not None:
        out.append(
            {
                "type": "error",
                "name": res.error.ename,
                "value": res.error.evalue,
                "traceback": res.error.traceback,
            }
        )
    elif res.status is ExecutionStatus.TIMEOUT:
        out.append(
            {
                "type": "error",
                "name": "TimeoutError",
                "value": "the cell ran past the pool's execution timeout and was interrupted",
                "traceback": "",
            }
        )
    elif res.status is ExecutionStatus.LOST:
        out.append(
            {
                "type": "error",
                "name": "InterpreterLost",
                "value": "the interpreter ended during the cell (memory limit, crash or exit); "
                "its state is gone",
                "traceback": "",
            }
        )
    return out


async def execute(request: Request) -> Response:
    face = _face(request)
    sandbox = current_sandbox(request)
    who = require(request, Scope.EXECUTE, "running code")
    body: ExecuteBody = await _body(request, ExecuteBody)
    ctx, kind = _resolve(face, sandbox, body)
    face.quotas.execution(who.tenant)
    session = await face.context_session(sandbox, ctx)
    ctx.executions += 1
    count = ctx.executions
    chunks: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def run() -> ExecutionResult | None:
        try:
            if kind == "bash":
                shell = await session.run_shell(body.code)
                for name, text in (("stdout", shell.stdout), ("stderr", shell.stderr)):
                    if text:
                        chunks.put_nowait((name, text))
                if shell.exit_code != 0:
                    chunks.put_nowait(("exit", str(shell.exit_code)))
                return None
            ns = ctx.namespace
            if not body.env_vars:
                return await session.execute(
                    body.code,
                    on_output=lambda name, text: chunks.put_nowait((name, text)),
                    context=ns,
                )
            # E2B's envs hold for this one cell: set before it, put back after it
            before, after = _env_for_one_cell(kind, body.env_vars)
            await _quiet(session, before, namespace=ns)
            try:
                return await session.execute(
                    body.code,
                    on_output=lambda name, text: chunks.put_nowait((name, text)),
                    context=ns,
                )
            finally:
                await _quiet(session, after, namespace=ns)
        finally:
            chunks.put_nowait(None)

    task = asyncio.create_task(run())

    async def lines() -> AsyncIterator[bytes]:
        try:
            while (item := await chunks.get()) is not None:
                name, text = item
                if name == "exit":
                    yield _line(
                        {
                            "type": "error",
                            "name": "CommandExitError",
                            "value": f"exit status {text}",
                            "traceback": "",
                        }
                    )
                    continue
                yield _line({"type": name, "text": text, "timestamp": time.time_ns()})
            try:
                res = await task
            except errors.ServiceError as exc:
                yield _line(
                    {"type": "error", "name": exc.code.value, "value": exc.message, "traceback": ""}
                )
                res = None
            if res is not None:
                for obj in _outcome(res):
                    yield _line(obj)
            yield _line({"type": "number_of_executions", "execution_count": count})
            yield _line({"type": "end_of_execution"})
        finally:
            if not task.done():
                task.cancel()  # the client went away (its timeout): the session interrupts

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _context_json(ctx: Context) -> dict[str, Any]:
    return {"id": ctx.id, "language": ctx.language, "cwd": ctx.cwd}


async def create_context(request: Request) -> Response:
    face = _face(request)
    sandbox = current_sandbox(request)
    require(request, Scope.EXECUTE, "creating a code context")
    body: ContextBody = await _body(request, ContextBody)
    kind = _kind(body.language) or face.kind_of(sandbox.pool)
    if kind == "bash":
        raise HttpError(
            400,
            "BadRequest",
            "bash contexts are not supported by this server: run bash with "
            "run_code(language='bash') or commands.run",
        )
    ctx_id = uuid.uuid4().hex
    cwd = body.cwd or SESSION_CWD
    if kind == "python" and face.kind_of(sandbox.pool) == kind:
        # a namespace in the sandbox's own kernel: shared files and processes, as in E2B
        ctx = Context(ctx_id, "python", cwd, sandbox.pool, sandbox.session_key, namespace=ctx_id)
        session = await face.context_session(sandbox, sandbox.contexts[DEFAULT_CONTEXT])
        await _enter(session, kind, cwd, ctx_id)
    else:
        own = face.kind_of(sandbox.pool) == kind
        pool = sandbox.pool if own else face.pool_for_kind(kind, sandbox)
        ctx = Context(ctx_id, _language(kind), cwd, pool, _ctx_key(sandbox, ctx_id))
        await face.context_session(sandbox, ctx, new=True)
    sandbox.contexts[ctx_id] = ctx
    return JSONResponse(_context_json(ctx))


async def list_contexts(request: Request) -> Response:
    sandbox = current_sandbox(request)
    require(request, Scope.EXECUTE, "listing code contexts")
    return JSONResponse([_context_json(c) for c in sandbox.contexts.values()])


def _context(request: Request) -> Context:
    sandbox = current_sandbox(request)
    require(request, Scope.EXECUTE, "changing a code context")
    ctx_id = request.path_params["context_id"]
    ctx = sandbox.contexts.get(ctx_id)
    if ctx is None:
        raise HttpError(404, "NotFound", f"context {ctx_id!r} not found")
    return ctx


async def delete_context(request: Request) -> Response:
    ctx = _context(request)
    if ctx.id == DEFAULT_CONTEXT:
        raise HttpError(400, "BadRequest", "the default context ends with its sandbox")
    sandbox = current_sandbox(request)
    sandbox.contexts.pop(ctx.id, None)
    if ctx.namespace is not None:
        await _drop_namespace(_face(request), ctx)
    else:
        await _face(request).end_session(ctx)
    return Response(status_code=204)


async def _drop_namespace(face: E2bFace, ctx: Context) -> None:
    """A namespace context ends without ending the session it lives in (the sandbox's)."""
    assert ctx.namespace is not None
    with contextlib.suppress(errors.PoolNotFound):
        session = await face.engine.pool(ctx.pool).lookup(ctx.key)
        if session is not None:
            await session.reset_context(ctx.namespace)


async def restart_context(request: Request) -> Response:
    """A fresh interpreter: the context's session is ended and started again (for the default
    context this also empties its files: they live in that session). A namespace context only
    loses its variables: files and the session stay."""
    ctx = _context(request)
    face = _face(request)
    ctx.executions = 0
    sandbox = current_sandbox(request)
    if ctx.namespace is not None:
        await _drop_namespace(face, ctx)
        session = await face.context_session(sandbox, sandbox.contexts[DEFAULT_CONTEXT])
        await _enter(session, "python", ctx.cwd, ctx.namespace)
        return Response(status_code=204)
    await face.end_session(ctx)
    await face.context_session(sandbox, ctx)
    return Response(status_code=204)


async def health(request: Request) -> Response:
    return Response(status_code=204)


def _guarded(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except HttpError as exc:
            return error(exc.status, exc.message)
        except errors.ServiceError as exc:
            return service_error(exc)

    return wrapped


def build_interpreter_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/execute", _guarded(execute), methods=["POST"]),
            Route("/contexts", _guarded(create_context), methods=["POST"]),
            Route("/contexts", _guarded(list_contexts), methods=["GET"]),
            Route("/contexts/{context_id}", _guarded(delete_context), methods=["DELETE"]),
            Route("/contexts/{context_id}/restart", _guarded(restart_context), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
