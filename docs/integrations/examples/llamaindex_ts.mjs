// LlamaIndex TS's AzureDynamicSessionTool (@llamaindex/azure) against sessionpool.
//
//   npm install @llamaindex/azure@0.2.1
//   AZURE_POOL_MANAGEMENT_ENDPOINT=http://127.0.0.1:8080/pools/default \
//   SESSIONPOOL_API_KEY=sp-... node llamaindex_ts.mjs
import { AzureDynamicSessionTool } from '@llamaindex/azure'

const quiet = console.log
console.log = () => {} // the tool logs every payload and answer
const tool = new AzureDynamicSessionTool({
  // 1. the endpoint comes from AZURE_POOL_MANAGEMENT_ENDPOINT (or poolManagementEndpoint)
  azureADTokenProvider: async () => process.env.SESSIONPOOL_API_KEY, // 2. your API key
})
const out = await tool.call({ code: "print('hello from the sandbox')\n6 * 7" })
quiet(out.status, out.result, JSON.stringify(out.stdout))
await tool.uploadFile({ data: new Blob(['a,b\n1,2\n']), remoteFilename: 'data.csv' })
quiet((await tool.listFiles()).map((f) => f.filename).join(' '))
