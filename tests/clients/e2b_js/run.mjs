// The E2B JavaScript SDKs, unmodified, against a sessionpool server: E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY come from the test. Prints one JSON object with what each
// step saw; the test (tests/clients/test_e2b_js.py) asserts on it.
import { Sandbox } from '@e2b/code-interpreter'

const out = {}
const sbx = await Sandbox.create({ metadata: { suite: 'js' } })
try {
  out.sandboxId = sbx.sandboxId
  await sbx.runCode('x = 40')
  const ex = await sbx.runCode('x + 2')
  out.result = ex.text
  const err = await sbx.runCode('1 / 0')
  out.errorName = err.error ? err.error.name : null
  const printed = []
  await sbx.runCode('print("streamed")', { onStdout: (m) => printed.push(m.line ?? String(m)) })
  out.stdout = printed.join('')

  await sbx.files.write('notes/hello.txt', 'hello from js')
  out.read = await sbx.files.read('notes/hello.txt')
  out.listed = (await sbx.files.list('notes')).map((e) => e.name)

  const cmd = await sbx.commands.run('cat notes/hello.txt | wc -c')
  out.cmdStdout = cmd.stdout.trim()
  out.cmdExit = cmd.exitCode
  try {
    await sbx.commands.run('exit 7')
    out.failedExit = 0
  } catch (e) {
    out.failedExit = e.exitCode ?? null
  }
  const listed = await Sandbox.list({ query: { metadata: { suite: 'js' } } })
  const items = typeof listed.nextItems === 'function' ? await listed.nextItems() : listed
  out.inList = items.some((s) => s.sandboxId === sbx.sandboxId)
} finally {
  await sbx.kill()
}
out.runningAfterKill = await sbx.isRunning()
console.log(JSON.stringify(out))
