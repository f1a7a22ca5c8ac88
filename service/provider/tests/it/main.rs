//! Integration tests of the providers: the OpenAI-compatible client against a local fake.

mod openai;
