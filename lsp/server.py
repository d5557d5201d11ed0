"""`fim-lsp`: the pygls language server. Handlers are thin: read params, call the service,
convert the result to LSP types.

    fim-lsp                          # stdio (what editors start)
    fim-lsp --tcp 127.0.0.1:2087     # for debugging with a client that connects over TCP
    fim-lsp --connect ipc:///tmp/fim.sock --no-spawn

Features: textDocument/inlineCompletion (LSP 3.18) and textDocument/completion (the middle
as one item) for clients without it; incremental document sync; the `fim.accept` command
(each item runs it when accepted); the `fim/stats` request (counts, latency, worker state).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from typing import Any, BinaryIO, Optional
from urllib.parse import unquote

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from fim_server import __version__
from fim_server.wire.addresses import DEFAULT_ADDRESS

from .cursor import unit_length
from .service import Completion, CompletionService, Request
from .settings import SECTION, Settings, parse_settings
from .telemetry import Telemetry
from .worker_link import WorkerLink

log = logging.getLogger(__name__)

ACCEPT_COMMAND = "fim.accept"
STATS_REQUEST = "fim/stats"
WORD_BEFORE = re.compile(r"[A-Za-z0-9_]*$")
LABEL_CHARS = 80


class FimProtocol(LanguageServerProtocol):
    """pygls drops a request whose params do not parse (a negative line, a missing field)
    without answering it, so the client would wait forever: answer it with the error."""

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            msg_id = data.get("id") if isinstance(data, dict) and "method" in data else None
            if isinstance(msg_id, (int, str)):
                self._send_response(msg_id, error=exc.to_response_error())
            raise                           # pygls logs it and carries on with the next message


class FrameReader:
    """stdin as pygls reads it (readline for headers, read(n) for a body), kept in step with the
    frames when one's Content-Length is wrong.

    pygls trusts Content-Length. A body shorter than announced makes it take the next frames'
    bytes for the rest of this body; a longer one leaves its tail in front of the next header,
    where pygls no longer sees the header. Either way it never reads a whole frame again: the
    server stays up and answers nothing. A JSON body cannot hold "Content-Length: N" and a line
    break (JSON strings escape line breaks), so where one shows up, the next frame starts."""

    HEADER = re.compile(rb"Content-Length: \d+\r\n")

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.ahead = b""                       # read past the frame being read: the next frame's

    def readline(self) -> bytes:
        if b"\n" in self.ahead:
            line, self.ahead = self.ahead.split(b"\n", 1)
            line += b"\n"
        else:
            line, self.ahead = self.ahead + self.stream.readline(), b""
        header = self.HEADER.search(line)
        if header and header.start() > 0:
            log.error("fim-lsp: a frame was longer than its Content-Length; dropped %d bytes "
                      "before the next header", header.start())
            line = line[header.start():]
        return line

    def read(self, size: int) -> bytes:
        body, self.ahead = bytearray(self.ahead[:size]), self.ahead[size:]
        header = self.HEADER.search(body)
        while header is None and len(body) < size:
            # read1 returns what has arrived: a short body is found without waiting for more
            chunk = self.stream.read1(size - len(body))
            if not chunk:
                break                          # end of input
            body += chunk
            header = self.HEADER.search(body, max(0, len(body) - len(chunk) - 32))
        body = bytes(body)
        if header is None:
            return body
        log.error("fim-lsp: a frame was shorter than its Content-Length (%d bytes, not %d); "
                  "reading on from the next header", header.start(), size)
        body, self.ahead = body[:header.start()], body[header.start():] + self.ahead
        return body or b" "                    # not b"": pygls takes that for the end of input


class FimLanguageServer(LanguageServer):
    def __init__(self, defaults: Settings):
        super().__init__("fim-lsp", __version__, protocol_cls=FimProtocol)
        self.defaults = defaults               # from the command line; client settings go over them
        self.settings = defaults
        self.telemetry = Telemetry()
        self.link = WorkerLink(defaults, self.warn_user, self.log)
        self.service = CompletionService(self.link, self.telemetry, lambda: self.settings, self.log)

    def log(self, message: str, kind: lsp.MessageType = lsp.MessageType.Info) -> None:
        self.window_log_message(lsp.LogMessageParams(type=kind, message=message))

    def warn_user(self, message: str) -> None:
        self.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Warning, message=message))

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls reports a failed handler here; a log line, not a pop-up for every keystroke."""
        log.error("%s: %s", getattr(source, "__name__", source), error)
        self.log(f"fim: internal error: {error}", lsp.MessageType.Error)

    def apply_settings(self, raw: Any) -> None:
        settings, problems = parse_settings(raw, self.defaults)
        self.settings = settings
        self.link.configure(settings)
        if problems:
            self.warn_user("fim: some settings were not used: " + "; ".join(problems))

    def request(self, uri: str, position: lsp.Position, invoked: bool) -> Request:
        """Snapshot the document as it is now (pygls replaces its text on every change)."""
        doc = self.workspace.text_documents.get(unquote(uri))
        encoding = self.workspace.position_encoding
        return Request(uri=uri, language_id=doc.language_id if doc else None,
                       source=doc.source if doc else None, line=position.line,
                       character=position.character, invoked=invoked,
                       encoding=str(getattr(encoding, "value", encoding) or "utf-16"))


# ---------------------------------------------------------------- LSP conversions


def _accept(uri: str, done: Completion) -> lsp.Command:
    return lsp.Command(title="Accept completion", command=ACCEPT_COMMAND, arguments=[uri, done.id])


def _cursor(done: Completion) -> lsp.Position:
    return lsp.Position(line=done.ctx.line, character=done.ctx.character)


def inline_items(uri: str, done: Optional[Completion]) -> lsp.InlineCompletionList:
    if done is None:
        return lsp.InlineCompletionList(items=[])
    here = _cursor(done)
    return lsp.InlineCompletionList(items=[lsp.InlineCompletionItem(
        insert_text=done.text, range=lsp.Range(start=here, end=here), command=_accept(uri, done))])


def completion_items(uri: str, done: Optional[Completion], encoding: str) -> lsp.CompletionList:
    """One item whose edit replaces the word before the cursor with word + middle, so that
    clients filtering by the typed word keep it."""
    if done is None:
        return lsp.CompletionList(is_incomplete=True, items=[])
    word = WORD_BEFORE.search(done.ctx.line_before).group(0)
    here = _cursor(done)
    start = lsp.Position(line=here.line, character=here.character - unit_length(word, encoding))
    new_text = word + done.text
    label = next((line.strip() for line in new_text.split("\n") if line.strip()), new_text)
    item = lsp.CompletionItem(
        label=label[:LABEL_CHARS], kind=lsp.CompletionItemKind.Text, detail="fim",
        documentation=done.text,
        filter_text=new_text, sort_text="0", preselect=True,
        insert_text_format=lsp.InsertTextFormat.PlainText,
        text_edit=lsp.TextEdit(range=lsp.Range(start=start, end=here), new_text=new_text),
        command=_accept(uri, done))
    return lsp.CompletionList(is_incomplete=True, items=[item])


# ---------------------------------------------------------------- handlers


def build_server(defaults: Settings) -> FimLanguageServer:
    server = FimLanguageServer(defaults)

    @server.feature(lsp.INITIALIZE)
    def initialize(ls: FimLanguageServer, params: lsp.InitializeParams) -> None:
        if params.initialization_options is not None:
            ls.apply_settings(params.initialization_options)

    @server.feature(lsp.INITIALIZED)
    async def initialized(ls: FimLanguageServer, params: lsp.InitializedParams) -> None:
        if ls.settings is ls.defaults and _pulls_configuration(ls):
            await _pull_settings(ls)
        await ls.link.start()

    @server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def changed_configuration(ls: FimLanguageServer, params: lsp.DidChangeConfigurationParams) -> None:
        if params.settings is None and _pulls_configuration(ls):
            await _pull_settings(ls)
        elif params.settings is not None:
            ls.apply_settings(params.settings)

    @server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
    async def inline_completion(ls: FimLanguageServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
        uri = params.text_document.uri
        invoked = params.context.trigger_kind == lsp.InlineCompletionTriggerKind.Invoked
        done = await ls.service.complete(ls.request(uri, params.position, invoked))
        return inline_items(uri, done)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(resolve_provider=False))
    async def completion(ls: FimLanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        uri = params.text_document.uri
        request = ls.request(uri, params.position, invoked=False)
        return completion_items(uri, await ls.service.complete(request), request.encoding)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    async def did_close(ls: FimLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.service.closed(params.text_document.uri)
        await ls.link.close_document(params.text_document.uri)

    @server.command(ACCEPT_COMMAND)
    def accept(ls: FimLanguageServer, *args: Any) -> None:
        """Arguments: [uri, completion id]; anything else still counts one acceptance."""
        ls.service.accepted(args[0] if args and isinstance(args[0], str) else None)

    @server.feature(STATS_REQUEST)
    def stats(ls: FimLanguageServer, params: Any) -> dict[str, Any]:
        return {**ls.telemetry.snapshot(), "worker": ls.link.status(), "settings": ls.settings.to_wire()}

    @server.feature(lsp.SHUTDOWN)
    async def shutdown(ls: FimLanguageServer, params: Any) -> None:
        await ls.link.close()

    return server


def _pulls_configuration(ls: FimLanguageServer) -> bool:
    workspace = ls.client_capabilities.workspace
    return bool(workspace and workspace.configuration)


async def _pull_settings(ls: FimLanguageServer) -> None:
    try:
        result = await ls.workspace_configuration_async(
            lsp.ConfigurationParams(items=[lsp.ConfigurationItem(section=SECTION)]))
    except Exception as exc:                  # a client that cannot answer keeps the defaults
        log.warning("workspace/configuration failed: %s", exc)
        return
    if result and result[0] is not None:
        ls.apply_settings(result[0])


# ---------------------------------------------------------------- command line


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fim-lsp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen for one LSP client over TCP instead")
    p.add_argument("--connect", metavar="ADDR", default=DEFAULT_ADDRESS,
                   help=f"worker address (default {DEFAULT_ADDRESS}); the worker.address setting overrides it")
    p.add_argument("--no-spawn", action="store_true", help="never start a worker (default: spawnWorker setting)")
    p.add_argument("--log-file", help="write the server's log here instead of stderr")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not args.connect.startswith(("tcp://", "ipc://")):
        p.error(f"--connect must be tcp://HOST:PORT or ipc://PATH; got {args.connect!r}")
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit():
            p.error(f"--tcp must be HOST:PORT; got {args.tcp!r}")
        args.tcp = (host, int(port))
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(filename=args.log_file, level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = build_server(Settings(worker_address=args.connect, spawn_worker=not args.no_spawn))
    # SIGTERM unwinds like `exit` does, so a worker this server started is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.tcp:
            server.start_tcp(*args.tcp)
        else:
            server.start_io(stdin=FrameReader(sys.stdin.buffer))
    finally:
        server.link.kill_child_now()
    return 0


if __name__ == "__main__":
    sys.exit(main())
