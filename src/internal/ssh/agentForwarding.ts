/**
 * Which agent a connection forwards, and why it cannot: the rules of `ForwardAgent` and the
 * `forwardAgent` setting, apart from the rest of resolving a target.
 */
import * as Effect from "effect/Effect"
import { SettingsError } from "../../Errors.ts"
import type { Settings } from "../../Settings.ts"

// OpenSSH forwards nothing, silently, when there is no agent; a setting asked for on purpose
// says why it cannot be honoured instead.
export const noAgentToForward = (settings: Settings): Effect.Effect<never, SettingsError> =>
  Effect.fail(
    new SettingsError({
      setting: "forwardAgent",
      value: "true",
      detail: !settings.useAgent
        ? "there is no ssh-agent to forward: useAgent is false; set useAgent (with an agent at SSH_AUTH_SOCK) or leave forwardAgent off"
        : (process.env["SSH_AUTH_SOCK"] ?? "") === ""
        ? "there is no ssh-agent to forward: SSH_AUTH_SOCK is not set; start one (`eval $(ssh-agent)`, `ssh-add`) or leave forwardAgent off"
        : "there is no ssh-agent to forward: ssh_config's IdentityAgent for this host is `none` or names an unset variable; fix it or leave forwardAgent off"
    })
  )

/** Forwarding `socket`: named apart only when it is not the agent that authenticates. */
export const forwardingOf = (
  socket: string | undefined,
  agent: string | undefined
): { readonly forwardAgent?: true; readonly forwardAgentSocket?: string } =>
  socket === undefined
    ? {}
    : socket === agent
    ? { forwardAgent: true }
    : { forwardAgent: true, forwardAgentSocket: socket }
