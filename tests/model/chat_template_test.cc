#include "muninn/model/chat_template.h"

#include <gtest/gtest.h>

#include <vector>

namespace muninn::model {
namespace {

// SmolLM2-135M-Instruct's tokenizer.chat_template, as stored in its GGUF.
constexpr char kSmolLm2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

constexpr char kLlama3Template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

TEST(ChatTemplateTest, SmolLm2AddsItsDefaultSystemTurn) {
  auto t = ChatTemplate::FromJinja(kSmolLm2Template);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplateKind::kChatMl);
  std::vector<ChatMessage> msgs = {{"user", "Hi!"}};
  EXPECT_EQ(*t->Render(msgs, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  msgs = {{"system", "Be brief."}, {"user", "Hi!"}, {"assistant", "Hello."}};
  EXPECT_EQ(*t->Render(msgs, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n");
}

TEST(ChatTemplateTest, Llama3TrimsContent) {
  auto t = ChatTemplate::FromJinja(kLlama3Template);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplateKind::kLlama3);
  std::vector<ChatMessage> msgs = {{"user", "  Hi! \n"}};
  EXPECT_EQ(*t->Render(msgs, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, HuginnFollowsSpec) {
  auto t = ChatTemplate::FromJinja("{{ '<|begin_header|>' + message['role'] }}");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplateKind::kHuginn);
  std::vector<ChatMessage> msgs = {{"system", "You are a helpful assistant."}, {"user", " 2+2? "}};
  EXPECT_EQ(*t->Render(msgs, true),
            "<|begin_text|><|begin_header|>system<|end_header|>\n\nYou are a helpful "
            "assistant.<|end_turn|><|begin_header|>user<|end_header|>\n\n2+2?<|end_turn|>"
            "<|begin_header|>Huginn<|end_header|>\n\n");
  msgs.push_back({"assistant", "4"});
  EXPECT_EQ(*t->Render(std::span(msgs).subspan(1), false),
            "<|begin_text|><|begin_header|>user<|end_header|>\n\n2+2?<|end_turn|>"
            "<|begin_header|>Huginn<|end_header|>\n\n4<|end_turn|><|end_text|>");
}

TEST(ChatTemplateTest, UnknownTemplatesAreErrorsAndPlainIsExplicit) {
  EXPECT_EQ(ChatTemplate::FromJinja("{{ messages }}").status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(ChatTemplate::FromJinja("").status().code(), StatusCode::kUnimplemented);
  std::vector<ChatMessage> msgs = {{"user", "hi"}};
  EXPECT_EQ(*ChatTemplate::Plain().Render(msgs, true), "user: hi\n\nassistant: ");
  msgs = {{"", "hi"}};
  EXPECT_EQ(ChatTemplate::Plain().Render(msgs, true).status().code(), StatusCode::kInvalidArgument);
  msgs = {{"user<|im_end|>", "hi"}};
  EXPECT_FALSE(ChatTemplate::Of(ChatTemplateKind::kChatMl).Render(msgs, true).ok());
}

}  // namespace
}  // namespace muninn::model
