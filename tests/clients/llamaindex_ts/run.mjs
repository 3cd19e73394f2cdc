// LlamaIndex TS's AzureDynamicSessionTool (@llamaindex/azure), unmodified, against a sessionpool
// server: AZURE_POOL_MANAGEMENT_ENDPOINT and SP_TOKEN come from the test (azureADTokenProvider
// hands the tool the key). It speaks the first preview: python/execute with pythonCode (a flat
// answer), files/upload, files/content/<name>, files. Prints one JSON object with what each
// step saw; the test (tests/clients/test_llamaindex_ts.py) asserts on it.
import { readdir, readFile } from 'node:fs/promises'
import { AzureDynamicSessionTool } from '@llamaindex/azure'

const log = console.log
console.log = () => {} // the tool logs every payload and answer; keep stdout for the result

const tool = new AzureDynamicSessionTool({
  sessionId: process.env.SP_SESSION,
  azureADTokenProvider: async () => process.env.SP_TOKEN,
})
const out = {}
await tool.call({ code: 'rows = [3, 4, 5]' })
const sum = await tool.call({ code: "print(len(rows))\nsum(rows)" })
out.sum = { result: sum.result, stdout: sum.stdout, stderr: sum.stderr, status: sum.status }
const failed = await tool.call({ code: 'rows[10]' })
out.failed = { result: failed.result, status: failed.status, stderr: failed.stderr }
// an image result: the tool writes it under tool-output/ and answers a path in its place
const plot = await tool.call({
  code: "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()",
})
out.plotResult = plot.result
const saved = await readdir('tool-output')
out.saved = await Promise.all(
  saved.map(async (name) => [name, (await readFile(`tool-output/${name}`)).subarray(0, 4).toString('hex')]),
)
const uploaded = await tool.uploadFile({
  data: new Blob(['region,revenue\nnorth,120\nsouth,80\n']),
  remoteFilename: 'sales.csv',
})
out.uploaded = uploaded
out.listed = (await tool.listFiles()).map((f) => [f.filename, f.size])
const body = await tool.downloadFile({ remoteFilename: 'sales.csv' })
out.downloaded = await new Response(body).text()
const read = await tool.call({ code: "open('/mnt/data/sales.csv').read().count('\\n')" })
out.lines = read.result
log(JSON.stringify(out))
