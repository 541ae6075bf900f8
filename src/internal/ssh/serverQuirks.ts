/**
 * What the library does differently for servers with known faults, told from the software
 * version a server announces in its identification (`SSH-2.0-dropbear_2022.83`).
 *
 * Dropbear 2022.82 to 2024.85 can close a session channel on its own between the channel's
 * opening and its `exec` request when a command of another channel of the same connection ends
 * in that moment; the command then starts anyway, and sending its output trips an assertion
 * (`common-channel.c:705: !channel->sent_close`) that kills the whole connection and every
 * command on it (Dropbear's issue 321, fixed in 2024.86). Any client that runs commands side by
 * side on one connection hits it: plain ssh2 with 30 `echo`s at once, or 100 with 2 at a time,
 * crashed it in every run we tried. On those servers, a connection runs one command at a time.
 */
import type { Client } from "ssh2"

/** The software version the server announced (`dropbear_2022.83`, `OpenSSH_9.2p1 ...`), if known. */
export const serverSoftware = (client: Client): string | undefined => {
  // ssh2 keeps it from the identification line but has no public accessor for it.
  const version = (client as unknown as { readonly _remoteVer?: unknown })._remoteVer
  return typeof version === "string" ? version : undefined
}

/** `true` for a Dropbear whose channels are unsafe to run side by side (see above). */
export const runsOneChannelAtATime = (software: string | undefined): boolean => {
  const match = /^dropbear_(\d{4})\.(\d+)/.exec(software ?? "")
  if (match === null) return false
  const release = Number(match[1]) * 1000 + Number(match[2])
  return release >= 2022_082 && release < 2024_086
}
