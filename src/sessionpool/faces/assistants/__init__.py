"""The Assistants v2 face (and Azure AI Agents classic): assistants, threads, messages, runs,
run steps and files, as openai-python ``beta.*``, ``AzureOpenAI``, azure-ai-projects 1.0.0b10
and azure-ai-agents 1.x speak them."""

from sessionpool.faces.assistants.routes import AssistantsFace

__all__ = ["AssistantsFace"]
