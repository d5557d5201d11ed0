// The VS Code side of fim: start fim-lsp, let vscode-languageclient register its inline
// completions (LSP 3.18), time them for the status bar, and three commands. All completion logic
// (debounce, latest-wins, worker, post-processing, stats) lives in the server.
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";
import { ConfigGet, serverCommand, serverSettings } from "./settings";
import { ServerState, ServerStats, STATS_METHOD, statsReport, statusText } from "./status";

const SECTION = "fim";

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let output: vscode.LogOutputChannel;
let lastMs: number | undefined;
let lastStats: ServerStats | undefined;
let refreshTimer: NodeJS.Timeout | undefined;

// Values the user set (any scope); unset keys stay out so the server's defaults apply.
function userValues(): ConfigGet {
  const config = vscode.workspace.getConfiguration(SECTION);
  return (key) => {
    const seen = config.inspect(key);
    return seen?.workspaceFolderValue ?? seen?.workspaceValue ?? seen?.globalValue;
  };
}

function isEnabled(): boolean {
  return vscode.workspace.getConfiguration(SECTION).get<boolean>("enable", true);
}

function serverState(): ServerState {
  if (!client) {
    return "stopped";
  }
  return client.isRunning() ? "running" : "starting";
}

function updateStatus(): void {
  statusItem.text = statusText(lastStats, lastMs, isEnabled(), serverState());
  statusItem.tooltip = lastStats ? statsReport(lastStats, lastMs).join("\n") : "fim: no stats yet";
}

async function refreshStats(): Promise<ServerStats | undefined> {
  if (!client?.isRunning()) {
    return undefined;
  }
  try {
    lastStats = await client.sendRequest<ServerStats>(STATS_METHOD, {});
  } catch (err) {
    output.appendLine(`${STATS_METHOD} failed: ${String(err)}`);
  }
  updateStatus();
  return lastStats;
}

// One stats request shortly after a burst of completions, not one per keystroke.
function refreshSoon(): void {
  if (refreshTimer) {
    clearTimeout(refreshTimer);
  }
  refreshTimer = setTimeout(() => void refreshStats(), 500);
}

function clientOptions(): LanguageClientOptions {
  return {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: serverSettings(userValues()),
    outputChannel: output,
    middleware: {
      // The server's textDocument/completion item is for editors without inline completion;
      // here it would repeat the ghost text in the suggest widget and cost a worker call.
      provideCompletionItem: () => undefined,
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!isEnabled()) {
          return undefined;
        }
        const started = Date.now();
        const result = await next(document, position, context, token);
        if (!token.isCancellationRequested) {
          lastMs = Date.now() - started;
          updateStatus();
          refreshSoon();
        }
        return result;
      },
    },
  };
}

async function startClient(): Promise<void> {
  const command = serverCommand(userValues());
  if ("error" in command) {
    void vscode.window.showErrorMessage(`fim: ${command.error}`);
    return;
  }
  const server: ServerOptions = { command: command.command, args: command.args, transport: TransportKind.stdio };
  client = new LanguageClient("fim", "fim", server, clientOptions());
  updateStatus();
  try {
    await client.start();
  } catch (err) {
    client = undefined;
    const message = `fim: could not start ${command.command}: ${String(err)}. Set fim.server.path to the fim-lsp executable.`;
    output.appendLine(message);
    void vscode.window.showErrorMessage(message);
  }
  updateStatus();
}

async function restartServer(): Promise<void> {
  if (client) {
    await client.stop().catch((err) => output.appendLine(`stop: ${String(err)}`));
    client = undefined;
  }
  lastStats = undefined; // a new server counts from zero
  lastMs = undefined;
  await startClient();
}

async function toggle(): Promise<void> {
  await vscode.workspace.getConfiguration(SECTION).update("enable", !isEnabled(), vscode.ConfigurationTarget.Global);
  updateStatus();
}

async function showStats(): Promise<void> {
  const stats = await refreshStats();
  if (!stats) {
    void vscode.window.showWarningMessage("fim: the server is not running (see the fim output)");
    return;
  }
  const lines = statsReport(stats, lastMs);
  output.appendLine(lines.join("\n"));
  void vscode.window.showInformationMessage(`fim: ${lines.join(" | ")}`);
}

function onConfigChange(event: vscode.ConfigurationChangeEvent): void {
  if (!event.affectsConfiguration(SECTION)) {
    return;
  }
  if (event.affectsConfiguration(`${SECTION}.server`)) {
    void restartServer();
    return;
  }
  updateStatus();
  if (client?.isRunning()) {
    void client.sendNotification(DidChangeConfigurationNotification.type, { settings: serverSettings(userValues()) });
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("fim", { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "fim.showStats";
  statusItem.name = "fim";
  statusItem.show();
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand("fim.toggle", toggle),
    vscode.commands.registerCommand("fim.restartServer", restartServer),
    vscode.commands.registerCommand("fim.showStats", showStats),
    vscode.workspace.onDidChangeConfiguration(onConfigChange),
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  if (refreshTimer) {
    clearTimeout(refreshTimer);
  }
  await client?.stop();
}
